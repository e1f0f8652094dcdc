#include "stats.h"

#include <string.h>

const char *const kg_refusal_names[KG_REFUSAL_COUNT] = {
#define KG_REFUSAL_NAME(name) #name,
	KG_REFUSAL_REASONS(KG_REFUSAL_NAME)
#undef KG_REFUSAL_NAME
};

enum kg_refusal kg_refusal_of(const char *reason)
{
	for (int i = 0; i < KG_REFUSAL_COUNT; i++)
		if (strcmp(kg_refusal_names[i], reason) == 0)
			return (enum kg_refusal)i;
	return KG_REFUSED_handshake_failed;
}

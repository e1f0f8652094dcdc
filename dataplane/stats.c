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

const char *const kg_up_refusal_names[KG_UP_REFUSAL_COUNT] = {
#define KG_UP_REFUSAL_NAME(name) #name,
	KG_UP_REFUSAL_REASONS(KG_UP_REFUSAL_NAME)
#undef KG_UP_REFUSAL_NAME
};

const char *const kg_up_results[KG_UP_REFUSAL_COUNT] = {
#define KG_UP_RESULT_NAME(name) "upstream_" #name,
	KG_UP_REFUSAL_REASONS(KG_UP_RESULT_NAME)
#undef KG_UP_RESULT_NAME
};

enum kg_up_refusal kg_up_refusal_of(const char *reason)
{
	static const char prefix[] = "upstream_";

	if (strncmp(reason, prefix, sizeof(prefix) - 1) == 0)
		reason += sizeof(prefix) - 1;
	for (int i = 0; i < KG_UP_REFUSAL_COUNT; i++)
		if (strcmp(kg_up_refusal_names[i], reason) == 0)
			return (enum kg_up_refusal)i;
	return KG_UP_REFUSED_handshake_failed;
}

void kg_stats_add(struct kg_worker_stats *t, const struct kg_worker_stats *s)
{
	const uint64_t *src = (const uint64_t *)s;
	uint64_t *dst = (uint64_t *)t;

	/* Every field is a uint64_t counter: add them all. */
	for (size_t i = 0; i < sizeof(*s) / sizeof(uint64_t); i++)
		dst[i] += src[i];
}

uint64_t kg_stats_latency_quantile(const struct kg_worker_stats *s, double q)
{
	uint64_t total = 0, seen = 0;

	for (int b = 0; b < KG_LAT_BUCKETS; b++)
		total += s->hs_latency[b];
	if (!total)
		return 0;
	for (int b = 0; b < KG_LAT_BUCKETS; b++) {
		seen += s->hs_latency[b];
		if ((double)seen >= q * (double)total)
			return 2ull << b; /* the bucket's upper bound */
	}
	return 2ull << (KG_LAT_BUCKETS - 1);
}

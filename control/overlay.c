#include "overlay.h"

#include <stdlib.h>
#include <string.h>

struct overlay {
	char *path;
	char *data;
	size_t len;
	struct overlay *next;
};

static struct overlay *overlays;
static bool suspended;

void kg_overlay_suspend(bool on)
{
	suspended = on;
}

static struct overlay *find(const char *path)
{
	for (struct overlay *o = overlays; o; o = o->next)
		if (strcmp(o->path, path) == 0)
			return o;
	return NULL;
}

BIO *kg_overlay_open(const char *path)
{
	struct overlay *o = suspended ? NULL : find(path);

	return o ? BIO_new_mem_buf(o->data, (int)o->len) : NULL;
}

const char *kg_overlay_get(const char *path, size_t *len)
{
	struct overlay *o = find(path);

	if (o && len)
		*len = o->len;
	return o ? o->data : NULL;
}

static void remove_path(const char *path)
{
	for (struct overlay **p = &overlays; *p; p = &(*p)->next) {
		if (strcmp((*p)->path, path) != 0)
			continue;
		struct overlay *o = *p;
		*p = o->next;
		free(o->path);
		free(o->data);
		free(o);
		return;
	}
}

int kg_overlay_set(const char *path, const char *data, size_t len)
{
	struct overlay *o;

	remove_path(path);
	if (!data)
		return 0;
	o = calloc(1, sizeof(*o));
	if (!o || !(o->path = strdup(path)) || !(o->data = malloc(len ? len : 1))) {
		if (o)
			free(o->path);
		free(o);
		return -1;
	}
	memcpy(o->data, data, len);
	o->len = len;
	o->next = overlays;
	overlays = o;
	return 0;
}

size_t kg_overlay_count(void)
{
	size_t n = 0;

	for (struct overlay *o = overlays; o; o = o->next)
		n++;
	return n;
}

void kg_overlay_clear(void)
{
	while (overlays)
		remove_path(overlays->path);
}

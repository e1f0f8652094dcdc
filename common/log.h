/* One line per event, key=value text or JSON, written with a single write(2)
 * so lines from several workers never interleave. */
#ifndef KG_LOG_H
#define KG_LOG_H
#include <stddef.h>

enum kg_log_format { KG_LOG_TEXT, KG_LOG_JSON };
enum kg_log_level { KG_LOG_DEBUG, KG_LOG_INFO, KG_LOG_WARN, KG_LOG_ERROR };

enum kg_field_type { KG_F_STR, KG_F_INT };
struct kg_field {
	const char *key;
	enum kg_field_type type;
	const char *s; /* NULL or "" is logged as "-" (text) / null (json) */
	long long i;
};

#define KG_S(k, v) ((struct kg_field){ .key = (k), .type = KG_F_STR, .s = (v) })
#define KG_I(k, v) ((struct kg_field){ .key = (k), .type = KG_F_INT, .i = (long long)(v) })
#define KG_NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

void kg_log_set_format(enum kg_log_format fmt);
enum kg_log_format kg_log_get_format(void);
void kg_log_set_fd(int fd);
/* Makes the current log descriptor refer to fd's file (dup2), closes fd. */
void kg_log_reopen(int fd);

void kg_log_event(enum kg_log_level lvl, const char *event,
		  const struct kg_field *fields, size_t nfields);
/* Convenience: an event with a single free-text msg field. */
void kg_log_msg(enum kg_log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Exposed for unit tests: render one line (with trailing '\n') into buf. */
size_t kg_log_render(char *buf, size_t cap, enum kg_log_format fmt, enum kg_log_level lvl,
		     const char *time, const char *event,
		     const struct kg_field *fields, size_t nfields);
#endif

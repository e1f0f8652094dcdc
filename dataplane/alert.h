/* OpenSSL picks the alert for a failed verification from a fixed table that
 * has no access_denied and maps "not yet valid" to bad_certificate. This
 * rewrites the fatal alert OpenSSL just queued so the client reads the one
 * that names the real reason. */
#ifndef KG_ALERT_H
#define KG_ALERT_H
#include <stdint.h>

#define KG_ALERT_BAD_CERTIFICATE 42
#define KG_ALERT_UNSUPPORTED_CERTIFICATE 43
#define KG_ALERT_CERTIFICATE_EXPIRED 45
#define KG_ALERT_ACCESS_DENIED 49

struct kg_conn;

/* 0 when the queued alert now carries desc; -1 when it could not be rewritten
 * (the original alert then goes out unchanged). */
int kg_alert_rewrite(struct kg_conn *c, uint8_t desc);
#endif

#include "certtext.h"

#include <openssl/bn.h>
#include <stdio.h>

void kg_name_text(const X509_NAME *name, char *buf, size_t cap)
{
	BIO *mem = BIO_new(BIO_s_mem());
	int n = 0;

	if (mem) {
		X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253);
		n = BIO_read(mem, buf, (int)cap - 1);
		BIO_free(mem);
	}
	buf[n > 0 ? n : 0] = '\0';
}

void kg_serial_normalise(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	while ((*in == '0' || *in == ':') && in[1])
		in++;
	for (; *in && n + 1 < cap; in++)
		if (*in != ':')
			out[n++] = (char)(*in >= 'a' && *in <= 'f' ? *in - 32 : *in);
	out[n] = '\0';
}

void kg_serial_text(const ASN1_INTEGER *serial, char *buf, size_t cap)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;

	kg_serial_normalise(hex ? hex : "", buf, cap);
	OPENSSL_free(hex);
	BN_free(bn);
}

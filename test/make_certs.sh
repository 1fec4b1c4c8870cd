#!/usr/bin/env bash
# make_certs.sh OUTDIR
#
# Makes the TLS material the TAP tests need, with the openssl CLI only:
#
#   ca.crt ca.key                  test CA (the worker trusts it via webhooks.ca_file)
#   server.crt server.key          signed by the CA, SAN IP:127.0.0.1, DNS:localhost, DNS:webhooks.test
#   expired.crt expired.key        signed by the CA, same SANs, valid only in January 2020
#   wronghost.crt wronghost.key    signed by the CA, SAN DNS:wrong.example only
#   selfsigned.crt selfsigned.key  self-signed (not from the CA), SAN IP:127.0.0.1, DNS:localhost
#   ca2.crt ca2.key                a second CA, trusted by nothing unless a test installs it
#                                  (e.g. as OpenSSL's default file, SSL_CERT_FILE)
#   otherca.crt otherca.key        signed by ca2, same SANs as server
#
# Keys are EC P-256.  Idempotent: does nothing if OUTDIR/ca.crt already exists.
# Safe when several test scripts call it at once (prove -j): the work happens
# under flock in a private directory, and ca.crt is moved into place last, so
# its presence means the whole set is complete and consistent.
#
# The expired certificate is made with `openssl ca -startdate/-enddate`, which
# works with every OpenSSL from 1.1.1 on (Debian 12 ships 3.0, whose
# `openssl x509` has no -not_before/-not_after).
#
# Nothing is written outside OUTDIR; nothing depends on the system openssl.cnf.

set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
OUTDIR=$1

[ -e "$OUTDIR/ca.crt" ] && exit 0

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

# Serialise concurrent callers; the second one finds ca.crt and leaves.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$OUTDIR/.lock"
	flock 9
	[ -e "$OUTDIR/ca.crt" ] && exit 0
fi

work=$(mktemp -d "$OUTDIR/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# Do not read the system openssl.cnf or a user's RANDFILE.
export OPENSSL_CONF="$work/openssl.cnf"
export RANDFILE="$work/.rnd"

cat > openssl.cnf <<EOF
[req]
distinguished_name = req_dn
prompt             = no
[req_dn]
CN = placeholder

[ca]
default_ca = test_ca
[test_ca]
dir              = $work
database         = $work/index.txt
new_certs_dir    = $work/newcerts
serial           = $work/serial
default_md       = sha256
policy           = policy_any
unique_subject   = no
copy_extensions  = none
email_in_dn      = no
[policy_any]
commonName = supplied

[v3_ca]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
EOF

# server_extensions SECTION SAN [self]: a section of openssl.cnf with the
# extensions of a server certificate for SAN; issued by a CA (with an
# authority key identifier) unless "self"
server_extensions() {
	printf '\n[%s]\n' "$1"
	echo "basicConstraints       = critical, CA:FALSE"
	echo "keyUsage               = critical, digitalSignature"
	echo "extendedKeyUsage       = serverAuth"
	echo "subjectKeyIdentifier   = hash"
	[ "${3:-}" = self ] || echo "authorityKeyIdentifier = keyid, issuer"
	echo "subjectAltName         = $2"
}
{
	server_extensions v3_server "IP:127.0.0.1, DNS:localhost, DNS:webhooks.test"
	server_extensions v3_wronghost "DNS:wrong.example"
	server_extensions v3_selfsigned "IP:127.0.0.1, DNS:localhost" self
} >>openssl.cnf
mkdir newcerts
: > index.txt
openssl rand -hex 16 > serial

newkey() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

serial() {
	echo "0x$(openssl rand -hex 16)"
}

# CA
newkey ca.key
openssl req -x509 -new -key ca.key -subj "/CN=webhooks test CA" \
	-extensions v3_ca -days 3650 -sha256 -out ca.crt

# leaf NAME CN EXTENSIONS [CA]: a key and a CSR, signed by CA (default: ca)
leaf() {
	local name=$1 cn=$2 ext=$3 ca=${4:-ca}
	newkey "$name.key"
	openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
	openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -set_serial "$(serial)" \
		-days 825 -sha256 -extfile openssl.cnf -extensions "$ext" -out "$name.crt" 2>/dev/null
}
leaf server 127.0.0.1 v3_server
leaf wronghost wrong.example v3_wronghost

# a second CA and a server certificate from it
newkey ca2.key
openssl req -x509 -new -key ca2.key -subj "/CN=webhooks test CA 2" \
	-extensions v3_ca -days 3650 -sha256 -out ca2.crt
leaf otherca 127.0.0.1 v3_server ca2

# expired: valid 2020-01-01 .. 2020-02-01 only
newkey expired.key
openssl req -new -key expired.key -subj "/CN=127.0.0.1" -out expired.csr
openssl ca -batch -notext -config openssl.cnf -cert ca.crt -keyfile ca.key \
	-startdate 20200101000000Z -enddate 20200201000000Z \
	-extfile openssl.cnf -extensions v3_server \
	-in expired.csr -out expired.crt 2>/dev/null

# selfsigned: its own issuer, unknown to the CA
newkey selfsigned.key
openssl req -x509 -new -key selfsigned.key -subj "/CN=127.0.0.1" \
	-extensions v3_selfsigned -days 825 -sha256 -out selfsigned.crt

# sanity: the good certs verify against their CA, the others do not
# refuted CA CERT: stop if CERT verifies against CA
refuted() {
	if openssl verify -CAfile "$1" "$2" >/dev/null 2>&1; then
		echo "make_certs.sh: $2 unexpectedly verifies against $1" >&2
		exit 1
	fi
}
openssl verify -CAfile ca.crt server.crt >/dev/null
openssl verify -CAfile ca.crt wronghost.crt >/dev/null
refuted ca.crt expired.crt
refuted ca.crt selfsigned.crt
openssl verify -CAfile ca2.crt otherca.crt >/dev/null
refuted ca.crt otherca.crt

chmod 600 ./*.key
chmod 644 ./*.crt
for f in ca.key server.crt server.key expired.crt expired.key wronghost.crt \
	wronghost.key selfsigned.crt selfsigned.key ca2.crt ca2.key otherca.crt otherca.key; do
	mv -f "$f" "$OUTDIR/$f"
done
# last: its presence marks a complete set
mv -f ca.crt "$OUTDIR/ca.crt"

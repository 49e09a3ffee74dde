// The OpenSSL functions that libldns.a refers to, for nsegress and nsegress-names-proxy
// (CMakeLists.txt), each one ending the process.
//
// ldns is built with OpenSSL for DNSSEC (keys, signatures, NSEC3 hashes) and TSIG. nsegress and
// the proxy only parse and build messages (src/policy/names.cpp: ldns_wire2pkt, ldns_pkt2wire,
// ldns_pkt_query_new_frm_str and the accessors of packets, records and rdata), and none of those
// reaches any of these functions; but linking the archive pulls in the objects that do, and
// resolving them with the real libcrypto would load libcrypto and libssl into every proxy (about
// 0.6 MiB, most of it relocated, private data: the proxy's memory, README "Performance", target
// 12) and into every nsegress run (their loading and relocation was a quarter of the CPU time of
// a 1-CIDR `nsegress hook`: target 8). Should any of them be called after all (another ldns
// version), the process stops with a message on stderr (the proxy's log): fail closed, no answer
// relayed (the redirect stays; a supervisor or the next restrict starts it again).
//
// The list is what the link reports missing without this file; a new ldns that needs another
// function fails to link, loudly. Symbols only: no signatures (never called).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace {

[[noreturn]] void ldns_called_openssl(const char* name) {
    const char* prog = program_invocation_short_name;  // nsegress or nsegress-names-proxy
    const char* a = ": ldns called OpenSSL's ";
    const char* b = ", which this executable does not link; stopping\n";
    (void)!::write(2, prog, std::strlen(prog));
    (void)!::write(2, a, std::strlen(a));
    (void)!::write(2, name, std::strlen(name));
    (void)!::write(2, b, std::strlen(b));
    std::abort();
}

}  // namespace

#define NSEGRESS_NO_OPENSSL(name) \
    extern "C" [[noreturn]] void name() { ldns_called_openssl(#name); }

NSEGRESS_NO_OPENSSL(BN_bin2bn)
NSEGRESS_NO_OPENSSL(BN_bn2bin)
NSEGRESS_NO_OPENSSL(BN_free)
NSEGRESS_NO_OPENSSL(BN_new)
NSEGRESS_NO_OPENSSL(BN_num_bits)
NSEGRESS_NO_OPENSSL(CRYPTO_free)
NSEGRESS_NO_OPENSSL(CRYPTO_memcmp)
NSEGRESS_NO_OPENSSL(DSA_SIG_free)
NSEGRESS_NO_OPENSSL(DSA_SIG_get0)
NSEGRESS_NO_OPENSSL(DSA_SIG_new)
NSEGRESS_NO_OPENSSL(DSA_SIG_set0)
NSEGRESS_NO_OPENSSL(DSA_do_sign)
NSEGRESS_NO_OPENSSL(DSA_free)
NSEGRESS_NO_OPENSSL(DSA_generate_key)
NSEGRESS_NO_OPENSSL(DSA_generate_parameters_ex)
NSEGRESS_NO_OPENSSL(DSA_get0_key)
NSEGRESS_NO_OPENSSL(DSA_get0_pqg)
NSEGRESS_NO_OPENSSL(DSA_new)
NSEGRESS_NO_OPENSSL(DSA_set0_key)
NSEGRESS_NO_OPENSSL(DSA_set0_pqg)
NSEGRESS_NO_OPENSSL(ECDSA_SIG_free)
NSEGRESS_NO_OPENSSL(ECDSA_SIG_get0)
NSEGRESS_NO_OPENSSL(EC_GROUP_get0_generator)
NSEGRESS_NO_OPENSSL(EC_GROUP_get_curve_name)
NSEGRESS_NO_OPENSSL(EC_KEY_free)
NSEGRESS_NO_OPENSSL(EC_KEY_generate_key)
NSEGRESS_NO_OPENSSL(EC_KEY_get0_group)
NSEGRESS_NO_OPENSSL(EC_KEY_get0_private_key)
NSEGRESS_NO_OPENSSL(EC_KEY_new_by_curve_name)
NSEGRESS_NO_OPENSSL(EC_KEY_set_conv_form)
NSEGRESS_NO_OPENSSL(EC_KEY_set_private_key)
NSEGRESS_NO_OPENSSL(EC_KEY_set_public_key)
NSEGRESS_NO_OPENSSL(EC_POINT_copy)
NSEGRESS_NO_OPENSSL(EC_POINT_free)
NSEGRESS_NO_OPENSSL(EC_POINT_mul)
NSEGRESS_NO_OPENSSL(EC_POINT_new)
NSEGRESS_NO_OPENSSL(ENGINE_load_private_key)
NSEGRESS_NO_OPENSSL(ERR_print_errors_fp)
NSEGRESS_NO_OPENSSL(EVP_DigestFinal_ex)
NSEGRESS_NO_OPENSSL(EVP_DigestInit)
NSEGRESS_NO_OPENSSL(EVP_DigestInit_ex)
NSEGRESS_NO_OPENSSL(EVP_DigestSign)
NSEGRESS_NO_OPENSSL(EVP_DigestSignInit)
NSEGRESS_NO_OPENSSL(EVP_DigestUpdate)
NSEGRESS_NO_OPENSSL(EVP_DigestVerify)
NSEGRESS_NO_OPENSSL(EVP_DigestVerifyInit)
NSEGRESS_NO_OPENSSL(EVP_MD_CTX_free)
NSEGRESS_NO_OPENSSL(EVP_MD_CTX_new)
NSEGRESS_NO_OPENSSL(EVP_PKEY_CTX_free)
NSEGRESS_NO_OPENSSL(EVP_PKEY_CTX_new_id)
NSEGRESS_NO_OPENSSL(EVP_PKEY_CTX_set_rsa_keygen_bits)
NSEGRESS_NO_OPENSSL(EVP_PKEY_assign)
NSEGRESS_NO_OPENSSL(EVP_PKEY_free)
NSEGRESS_NO_OPENSSL(EVP_PKEY_get1_DSA)
NSEGRESS_NO_OPENSSL(EVP_PKEY_get1_EC_KEY)
NSEGRESS_NO_OPENSSL(EVP_PKEY_get1_RSA)
NSEGRESS_NO_OPENSSL(EVP_PKEY_get_base_id)
NSEGRESS_NO_OPENSSL(EVP_PKEY_get_id)
NSEGRESS_NO_OPENSSL(EVP_PKEY_keygen)
NSEGRESS_NO_OPENSSL(EVP_PKEY_keygen_init)
NSEGRESS_NO_OPENSSL(EVP_PKEY_new)
NSEGRESS_NO_OPENSSL(EVP_PKEY_set1_DSA)
NSEGRESS_NO_OPENSSL(EVP_PKEY_set1_RSA)
NSEGRESS_NO_OPENSSL(EVP_SignFinal)
NSEGRESS_NO_OPENSSL(EVP_VerifyFinal)
NSEGRESS_NO_OPENSSL(EVP_md5)
NSEGRESS_NO_OPENSSL(EVP_sha1)
NSEGRESS_NO_OPENSSL(EVP_sha256)
NSEGRESS_NO_OPENSSL(EVP_sha384)
NSEGRESS_NO_OPENSSL(EVP_sha512)
NSEGRESS_NO_OPENSSL(HMAC)
NSEGRESS_NO_OPENSSL(MD5)
NSEGRESS_NO_OPENSSL(RAND_bytes)
NSEGRESS_NO_OPENSSL(RAND_seed)
NSEGRESS_NO_OPENSSL(RSA_free)
NSEGRESS_NO_OPENSSL(RSA_get0_crt_params)
NSEGRESS_NO_OPENSSL(RSA_get0_factors)
NSEGRESS_NO_OPENSSL(RSA_get0_key)
NSEGRESS_NO_OPENSSL(RSA_new)
NSEGRESS_NO_OPENSSL(RSA_set0_crt_params)
NSEGRESS_NO_OPENSSL(RSA_set0_factors)
NSEGRESS_NO_OPENSSL(RSA_set0_key)
NSEGRESS_NO_OPENSSL(RSA_sign)
NSEGRESS_NO_OPENSSL(SHA1)
NSEGRESS_NO_OPENSSL(SHA384)
NSEGRESS_NO_OPENSSL(UI_OpenSSL)
NSEGRESS_NO_OPENSSL(d2i_DSA_SIG)
NSEGRESS_NO_OPENSSL(d2i_ECDSA_SIG)
NSEGRESS_NO_OPENSSL(d2i_PUBKEY)
NSEGRESS_NO_OPENSSL(d2i_PrivateKey)
NSEGRESS_NO_OPENSSL(i2d_DSA_SIG)
NSEGRESS_NO_OPENSSL(i2d_PUBKEY)
NSEGRESS_NO_OPENSSL(i2d_PrivateKey)
NSEGRESS_NO_OPENSSL(i2o_ECPublicKey)
NSEGRESS_NO_OPENSSL(o2i_ECPublicKey)

// Test-only handlers for nsegress's instrumentation points (include/nsegress/testpoint.hpp).
//
// Linked only into `nsegress_testhooks`, a second build of src/cli/main.cpp that test_faults.sh
// and test_concurrency.sh use (tests/CMakeLists.txt passes its path as NSEGRESS_TESTHOOKS).
// The installed `nsegress` never contains this file, so it never reads these variables:
//   NSEGRESS_TEST_PAUSE_AT=STEP[,STEP...]  raise SIGSTOP at each named step (the test then
//                                          inspects the namespace, kills or continues us)
//   NSEGRESS_TEST_BAD_ELEMENT=1            append an element with a 3-byte key to set allow4
//                                          of the policy batch: the kernel must refuse it
//   NSEGRESS_TEST_BAD_ROUTE=1              set a host bit in the destination of the first throw
//                                          route a first restrict sends: the kernel must refuse it
//   NSEGRESS_TEST_STALE_GENID=N            send the first N attempts of every commit with a
//                                          generation id that is not the current one
//   NSEGRESS_TEST_CHANGED_READS=N          take the first N readings of every ruleset read
//                                          (status, and what restrict replaces) as interrupted
#include <netinet/in.h>

#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "nsegress/inspect.hpp"
#include "nsegress/nft.hpp"
#include "nsegress/testpoint.hpp"

namespace {

using namespace nsegress;

void pause_at(const char* step) {
    const char* want = std::getenv("NSEGRESS_TEST_PAUSE_AT");
    if (!want) return;
    std::string list = std::string(",") + want + ",";
    if (list.find(std::string(",") + step + ",") == std::string::npos) return;
    std::fprintf(stderr, "nsegress-test: stopping at step '%s' (pid %d)\n", step,
                 static_cast<int>(::getpid()));
    std::fflush(stderr);
    ::raise(SIGSTOP);
}

struct SetFree {
    void operator()(nftnl_set* s) const { nftnl_set_free(s); }
};

void bad_element(nft::Batch& b) {
    if (!std::getenv("NSEGRESS_TEST_BAD_ELEMENT")) return;
    // The batch ends with BATCH_END; slip one more message in before it.
    nft::BatchMessage end = b.messages.back();
    // BATCH_END is a bare header plus nfgenmsg.
    const std::size_t end_len = NLMSG_ALIGN(sizeof(nlmsghdr) + sizeof(nfgenmsg));
    std::vector<char> tail(b.bytes.end() - static_cast<long>(end_len), b.bytes.end());
    b.bytes.resize(b.bytes.size() - end_len);
    b.messages.pop_back();

    std::unique_ptr<nftnl_set, SetFree> s(nftnl_set_alloc());
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, nft::kTable);
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, nft::kSet4);
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    const unsigned char key[3] = {10, 0, 0};  // an ipv4_addr key is 4 bytes
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, sizeof key);
    nftnl_set_elem_add(s.get(), e);
    std::vector<char> msg(4096);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(msg.data(), NFT_MSG_NEWSETELEM, NFPROTO_INET,
                                          NLM_F_CREATE | NLM_F_ACK, end.seq);
    nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
    b.bytes.insert(b.bytes.end(), msg.data(), msg.data() + NLMSG_ALIGN(nlh->nlmsg_len));
    b.messages.push_back(nft::BatchMessage{
        end.seq, NFT_MSG_NEWSETELEM, "test-injected element (3-byte key) of set allow4", true});

    auto* endh = reinterpret_cast<nlmsghdr*>(tail.data());
    endh->nlmsg_seq = end.seq + 1;
    end.seq += 1;
    b.bytes.insert(b.bytes.end(), tail.begin(), tail.end());
    b.messages.push_back(end);
}

void bad_route(Route& r) {
    static bool done = false;
    if (done || r.type != 9 /* RTN_THROW */ || r.dst.prefix == bits_of(r.family)) return;
    done = true;
    r.dst.addr.value |= 1;  // "192.0.2.1/24": the kernel refuses a prefix with host bits set
}

struct Install {
    Install() {
        testing::g_hooks.pause_at = pause_at;
        testing::g_hooks.mutate_batch = bad_element;
        if (std::getenv("NSEGRESS_TEST_BAD_ROUTE")) testing::g_hooks.mutate_route = bad_route;
        if (const char* n = std::getenv("NSEGRESS_TEST_STALE_GENID"))
            testing::g_hooks.stale_genid_attempts = std::atoi(n);
        if (const char* n = std::getenv("NSEGRESS_TEST_CHANGED_READS"))
            testing::g_hooks.changed_reads = std::atoi(n);
    }
} install;

}  // namespace

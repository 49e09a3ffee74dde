// Test-only instrumentation points.
//
// The core library calls test_point("step") at named steps of restrict and release, and lets a
// test corrupt a compiled batch or pin a stale ruleset generation. All of it is inert unless a
// handler is installed, and only the separate test binary `nsegress_testhooks` (built by
// tests/CMakeLists.txt from src/cli/main.cpp plus tests/testhooks/testhooks.cpp when the CMake
// option NSEGRESS_TEST_HOOKS is ON) installs handlers. The installed `nsegress` binary has no
// code that reads NSEGRESS_TEST_* variables, so a production run never honours them, whatever
// its environment says: an attacker who controls a hook's or a CNI plugin's environment cannot
// stop nsegress half-way or make it commit something else.
#pragma once

namespace nsegress::nft {
struct Batch;
}
namespace nsegress {
struct Route;
}

namespace nsegress::testing {

struct Hooks {
    void (*pause_at)(const char* step) = nullptr;       // called at every named step
    void (*mutate_batch)(nft::Batch& batch) = nullptr;  // called on the policy batch before commit
    void (*mutate_route)(Route& route) = nullptr;  // called on each route a first restrict sends
    int stale_genid_attempts = 0;  // commit() sends a stale generation id this many times first
    int changed_reads = 0;         // consistent_read() takes this many readings as changed first
};

extern Hooks g_hooks;

// Step names, in order: restrict: "entered", "inspected", "committed", "conntrack",
// "route-set-routes", "route-set-stale", "route-set-obsolete-rules", "route-set-rules", "probe"
// (a re-run deletes obsolete rules between its unreachable and its throw routes); release:
// "release-entered", "release-committed", "release-rules", "release-routes".
inline void test_point(const char* step) {
    if (g_hooks.pause_at) g_hooks.pause_at(step);
}

}  // namespace nsegress::testing

// NSEGRESS_SANITIZE builds only: proves that a sanitizer report fails the process with the
// compiled-in options even under `env -i` (testenv/test-asan.sh runs it before the suite).
//   nsegress_sanitizer_selftest heap|ub|leak
#include <cstdlib>
#include <cstring>
#include <string>

// volatile: the optimizer must not remove what is there to be caught
char* volatile g_heap;
void* volatile g_leak;

int main(int argc, char** argv) {
    std::string what = argc > 1 ? argv[1] : "";
    volatile int n = argc + 9;
    if (what == "heap") {
        g_heap = new char[n];
        g_heap[n] = 1;  // one past the end
        delete[] g_heap;
    } else if (what == "ub") {
        volatile int big = 0x7fffffff;
        return big + n;  // signed overflow
    } else if (what == "leak") {
        g_leak = std::malloc(77);
        g_leak = nullptr;
    }
    return 0;
}

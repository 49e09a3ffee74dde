// Built only into NSEGRESS_SANITIZE builds (test builds): the sanitizers' default options.
//
// Compiled in rather than left to ASAN_OPTIONS/UBSAN_OPTIONS because nsegress is also started
// with an empty or foreign environment (`env -i`, runc and podman hooks, CNI). Any report:
//  - ends the process with exit status 86, which no command of ours uses;
//  - is written to NSEGRESS_SANITIZER_LOG_DIR/report.PID instead of stderr, where a test that
//    discards stderr or ignores a status (cleanup paths) would lose it; testenv/test-asan.sh
//    fails when that directory is not empty after the suite.
// Variables in the environment still override single options.

#ifndef NSEGRESS_SANITIZER_LOG_DIR
#error "NSEGRESS_SANITIZER_LOG_DIR must be defined"
#endif

#define NSEGRESS_COMMON_SANITIZER_OPTIONS \
    "exitcode=86:log_path=" NSEGRESS_SANITIZER_LOG_DIR "/report:print_summary=1"

extern "C" const char* __asan_default_options() {
    return NSEGRESS_COMMON_SANITIZER_OPTIONS
        ":detect_leaks=1:detect_stack_use_after_return=1"
        ":strict_string_checks=1:check_initialization_order=1";
}

extern "C" const char* __ubsan_default_options() {
    return NSEGRESS_COMMON_SANITIZER_OPTIONS ":halt_on_error=1:print_stacktrace=1";
}

extern "C" const char* __lsan_default_options() { return NSEGRESS_COMMON_SANITIZER_OPTIONS; }

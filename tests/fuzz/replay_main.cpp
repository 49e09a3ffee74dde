// Without libFuzzer (g++, the normal and the ASan build): run one target over files and
// directories of inputs once, e.g. the committed corpus, so that every build replays it.
//   nsegress_fuzz_replay TARGET PATH...
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#define NSEGRESS_FUZZ_TARGET(name) \
    extern "C" int nsegress_fuzz_##name(const std::uint8_t*, std::size_t);
#include "fuzz_targets.inc"
#undef NSEGRESS_FUZZ_TARGET

namespace {

struct Target {
    const char* name;
    int (*run)(const std::uint8_t*, std::size_t);
};

const Target kTargets[] = {
#define NSEGRESS_FUZZ_TARGET(name) {#name, nsegress_fuzz_##name},
#include "fuzz_targets.inc"
#undef NSEGRESS_FUZZ_TARGET
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s TARGET PATH...\n", argv[0]);
        return 2;
    }
    const Target* target = nullptr;
    for (const auto& t : kTargets)
        if (std::strcmp(t.name, argv[1]) == 0) target = &t;
    if (!target) {
        std::fprintf(stderr, "unknown fuzz target '%s'\n", argv[1]);
        return 2;
    }
    std::vector<std::filesystem::path> files;
    for (int i = 2; i < argc; ++i) {
        std::filesystem::path p(argv[i]);
        if (std::filesystem::is_directory(p)) {
            for (const auto& e : std::filesystem::recursive_directory_iterator(p))
                if (e.is_regular_file()) files.push_back(e.path());
        } else {
            files.push_back(p);
        }
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
        std::fprintf(stderr, "no inputs for '%s'\n", target->name);
        return 1;
    }
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
        if (!in.eof() && in.fail()) {
            std::fprintf(stderr, "cannot read %s\n", f.c_str());
            return 1;
        }
        // An exact-size heap copy, as libFuzzer passes it: reads past the end are caught.
        std::vector<std::uint8_t> data(bytes.begin(), bytes.end());
        target->run(data.data(), data.size());
    }
    std::printf("%s: %zu inputs replayed, 0 failed\n", target->name, files.size());
    return 0;
}

#include "minitest.h"

#include <cstring>
#include <exception>

namespace minitest {

namespace {
int g_failures = 0;
int g_failedTests = 0;
std::string g_vectors;
}  // namespace

std::vector<Case>& registry() {
    static std::vector<Case> cases;
    return cases;
}

void fail(const char* file, int line, const std::string& message) {
    ++g_failures;
    std::fprintf(stderr, "  %s:%d: %s\n", file, line, message.c_str());
}

const std::string& vectorsPath() { return g_vectors; }

}  // namespace minitest

// Usage: tokenflow_tests <path to fingerprint.json> [name filter]
int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s <tests/vectors/fingerprint.json> [filter]\n", argv[0]);
        return 2;
    }
    minitest::g_vectors = argv[1];
    const char* filter = argc > 2 ? argv[2] : nullptr;
    int run = 0;
    for (const auto& c : minitest::registry()) {
        if (filter != nullptr && std::strstr(c.name, filter) == nullptr) {
            continue;
        }
        const int before = minitest::g_failures;
        try {
            c.fn();
        } catch (const std::exception& e) {
            minitest::fail(c.name, 0, std::string("exception: ") + e.what());
        }
        ++run;
        if (minitest::g_failures != before) {
            ++minitest::g_failedTests;
            std::fprintf(stderr, "FAIL %s\n", c.name);
        }
    }
    if (run == 0) {
        std::fprintf(stderr, "no tests ran\n");
        return 1;
    }
    std::printf("%d tests, %d failed\n", run, minitest::g_failedTests);
    return minitest::g_failedTests == 0 ? 0 : 1;
}

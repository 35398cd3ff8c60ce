// A minimal test runner: TEST(name) { CHECK(...); } and a main() that runs every test.
// Self-contained so that `make test` needs nothing but g++ and make.
#pragma once

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace minitest {

struct Case {
    const char* name;
    void (*fn)();
};

std::vector<Case>& registry();
void fail(const char* file, int line, const std::string& message);
// Path of tests/vectors/fingerprint.json, from the command line.
const std::string& vectorsPath();

struct Registrar {
    Registrar(const char* name, void (*fn)()) { registry().push_back(Case{name, fn}); }
};

}  // namespace minitest

#define TEST(name)                                                  \
    static void name();                                             \
    static const minitest::Registrar name##_registrar(#name, name); \
    static void name()

#define CHECK(cond)                                                      \
    do {                                                                 \
        if (!(cond)) minitest::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
    } while (0)

// Integers (and anything printable with operator<<).
#define CHECK_EQ(a, b)                                                                       \
    do {                                                                                     \
        const auto minitest_a = (a);                                                         \
        const auto minitest_b = (b);                                                         \
        if (!(minitest_a == minitest_b)) {                                                   \
            std::ostringstream minitest_out;                                                 \
            minitest_out << "CHECK_EQ(" #a ", " #b "): " << minitest_a << " != " << minitest_b; \
            minitest::fail(__FILE__, __LINE__, minitest_out.str());                          \
        }                                                                                    \
    } while (0)

// Strings: const char* or std::string on either side.
#define CHECK_STR(a, b)                                                                      \
    do {                                                                                     \
        const std::string minitest_a = (a);                                                  \
        const std::string minitest_b = (b);                                                  \
        if (minitest_a != minitest_b) {                                                      \
            minitest::fail(__FILE__, __LINE__,                                               \
                           "CHECK_STR(" #a ", " #b "): \"" + minitest_a + "\" != \"" + minitest_b + "\""); \
        }                                                                                    \
    } while (0)

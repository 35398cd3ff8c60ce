// A tiny JSON reader for the tests: enough to load tests/vectors/*.json and to parse what the
// firmware's JSON writer produces (so a payload is checked by reading it back, not by string compare).
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace testjson {

struct Value {
    enum class Kind { Null, Bool, Number, String, Array, Object } kind = Kind::Null;
    bool boolean = false;
    double number = 0;
    std::string string;
    std::vector<Value> array;
    std::vector<std::pair<std::string, Value>> object;  // in file order

    const Value& operator[](const std::string& key) const;
    const Value& operator[](size_t index) const { return array.at(index); }
    bool has(const std::string& key) const;
    size_t size() const { return kind == Kind::Array ? array.size() : object.size(); }
};

// Throws std::runtime_error on anything that is not a single, complete JSON value.
Value parse(const std::string& text);
Value parseFile(const std::string& path);

}  // namespace testjson

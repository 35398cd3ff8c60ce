// Behaviour of the host stand-in of Device OS: an in-memory device for src/main.cpp.
#include <cstdio>
#include <map>

#include "shim_control.h"

struct ShimLedgerInstance {
    std::string name;
    LedgerData data;
    int64_t syncedAt = 0;
    Ledger::OnSyncCallback callback = nullptr;
    void* arg = nullptr;
    Ledger::OnSyncFunction function;
};

namespace {

struct Device {
    uint32_t now = 0;
    bool connected = false;
    int maxEventDataSize = 1024;
    bool publishResult = true;
    std::map<std::string, std::shared_ptr<ShimLedgerInstance>> ledgers;
    std::map<std::string, user_std_function_int_str_t> functions;
    std::vector<shim::Publish> publishes;
    std::vector<std::string> logs;
    std::vector<shim::PinWrite> pinWrites;
    std::map<hal_pin_t, PinMode> pinModes;
};

Device& device() {
    static Device d;
    return d;
}

std::shared_ptr<ShimLedgerInstance> instance(const char* name) {
    auto& slot = device().ledgers[name];
    if (!slot) {
        slot = std::make_shared<ShimLedgerInstance>();
        slot->name = name;
    }
    return slot;
}

void runCallbacks(const std::shared_ptr<ShimLedgerInstance>& inst) {
    if (inst->callback != nullptr) inst->callback(Ledger(inst), inst->arg);
    if (inst->function) inst->function(Ledger(inst));
}

void log(const char* level, const char* fmt, va_list args) {
    char line[512];
    std::vsnprintf(line, sizeof(line), fmt, args);
    device().logs.push_back(std::string(level) + " " + line);
}

}  // namespace

// --- Device OS calls ------------------------------------------------------------------------------------
system_tick_t millis(void) { return device().now; }
int random(int min, int max) { return min < max ? min + static_cast<int>(device().now % static_cast<uint32_t>(max - min)) : min; }
extern "C" uint32_t HAL_RNG_GetRandomNumber(void) { return 0x2545F491u; }
extern "C" void pinMode(hal_pin_t pin, PinMode mode) { device().pinModes[pin] = mode; }
extern "C" void digitalWrite(hal_pin_t pin, uint8_t value) { device().pinWrites.push_back({pin, value}); }

namespace particle {

Variant::Variant(VariantMap val) : v_(std::make_shared<VariantMap>(std::move(val))) {}
Variant::Type Variant::type() const {
    switch (v_.index()) {
        case 0: return NULL_;
        case 1: return BOOL;
        case 2: return INT;
        case 3: return DOUBLE;
        case 4: return STRING;
        default: return MAP;
    }
}
bool Variant::isMap() const { return std::holds_alternative<std::shared_ptr<VariantMap>>(v_); }
String Variant::toString() const {
    if (isString()) return std::get<String>(v_);
    if (isBool()) return String(std::get<bool>(v_) ? "true" : "false");
    if (std::holds_alternative<int>(v_)) return String(std::to_string(std::get<int>(v_)).c_str());
    if (std::holds_alternative<double>(v_)) return String(std::to_string(std::get<double>(v_)).c_str());
    return String();  // null, map: no conversion defined, a default value (spark_wiring_variant.h)
}

bool LedgerData::set(const char* name, Variant val) {
    (*this)[name] = std::move(val);
    return true;
}
Variant LedgerData::get(const char* name) const {
    for (const auto& e : entries_) {
        if (e.first == name) return e.second;
    }
    return Variant();
}
bool LedgerData::has(const char* name) const {
    for (const auto& e : entries_) {
        if (e.first == name) return true;
    }
    return false;
}
Variant& LedgerData::operator[](const char* name) {
    for (auto& e : entries_) {
        if (e.first == name) return e.second;
    }
    entries_.emplace_back(String(name), Variant());
    return entries_.back().second;
}

LedgerData Ledger::get() const { return instance_ ? instance_->data : LedgerData(); }
time64_t Ledger::lastSynced() const { return instance_ ? instance_->syncedAt : 0; }
const char* Ledger::name() const { return instance_ ? instance_->name.c_str() : ""; }
int Ledger::onSync(OnSyncCallback callback, void* arg) {
    if (!instance_) return -1;
    instance_->callback = callback;
    instance_->arg = arg;
    return 0;
}
int Ledger::onSync(OnSyncFunction callback) {
    if (!instance_) return -1;
    instance_->function = std::move(callback);
    return 0;
}

}  // namespace particle

CloudClass Particle;
const Logger Log;
SystemClass System;

bool CloudClass::_function(const char* funcKey, user_function_int_str_t* func) {
    device().functions[funcKey] = func;
    return true;
}
bool CloudClass::_function(const char* funcKey, user_std_function_int_str_t func, void*) {
    device().functions[funcKey] = std::move(func);
    return true;
}
particle::Future<bool> CloudClass::publish(const char* eventName, const char* eventData, PublishFlags flags1,
                                           PublishFlags flags2) {
    Device& d = device();
    if (!d.connected || !d.publishResult) return particle::Future<bool>(false);
    d.publishes.push_back({d.now, eventName, eventData ? eventData : "", (flags1 | flags2).value()});
    return particle::Future<bool>(true);
}
particle::Future<bool> CloudClass::publish(const char* eventName, const char* eventData, int, PublishFlags flags1,
                                           PublishFlags flags2) {
    return publish(eventName, eventData, flags1, flags2);
}
bool CloudClass::connected(void) { return device().connected; }
int CloudClass::maxEventDataSize() { return device().connected ? device().maxEventDataSize : -1; }
particle::Ledger CloudClass::ledger(const char* name) { return Ledger(instance(name)); }

void Logger::trace(const char* fmt, ...) const { va_list a; va_start(a, fmt); log("TRACE", fmt, a); va_end(a); }
void Logger::info(const char* fmt, ...) const { va_list a; va_start(a, fmt); log("INFO", fmt, a); va_end(a); }
void Logger::warn(const char* fmt, ...) const { va_list a; va_start(a, fmt); log("WARN", fmt, a); va_end(a); }
void Logger::error(const char* fmt, ...) const { va_list a; va_start(a, fmt); log("ERROR", fmt, a); va_end(a); }
SerialLogHandler::SerialLogHandler(LogLevel) {}
String SystemClass::version() { return String("6.1.1"); }

// --- control ---------------------------------------------------------------------------------------------
namespace shim {

void setMillis(uint32_t now) { device().now = now; }
void setConnected(bool connected) { device().connected = connected; }
void setMaxEventDataSize(int size) { device().maxEventDataSize = size; }
void setPublishResult(bool ok) { device().publishResult = ok; }
void setLedger(const char* name, const LedgerData& data, int64_t syncedAtMs) {
    auto inst = instance(name);
    inst->data = data;
    inst->syncedAt = syncedAtMs;
}
void syncLedger(const char* name, const LedgerData& data, int64_t syncedAtMs) {
    setLedger(name, data, syncedAtMs);
    runCallbacks(instance(name));
}
void syncForeignLedger() {
    // A Ledger object the application never asked for: its callback argument is another instance.
    for (auto& entry : device().ledgers) {
        const auto& inst = entry.second;
        if (inst->callback != nullptr) inst->callback(Ledger(std::make_shared<ShimLedgerInstance>()), inst->arg);
        if (inst->callback != nullptr) inst->callback(Ledger(), inst->arg);
    }
}
bool ledgerRequested(const char* name) { return device().ledgers.count(name) != 0; }
int callFunction(const char* name, const char* arg) {
    auto it = device().functions.find(name);
    return it == device().functions.end() ? -2 : it->second(String(arg));
}
const std::vector<Publish>& publishes() { return device().publishes; }
std::vector<Publish> publishesNamed(const std::string& name) {
    std::vector<Publish> out;
    for (const auto& p : device().publishes) {
        if (p.name == name) out.push_back(p);
    }
    return out;
}
const std::vector<std::string>& logLines() { return device().logs; }
const std::vector<PinWrite>& pinWrites() { return device().pinWrites; }
bool pinIsOutput(hal_pin_t pin) {
    auto it = device().pinModes.find(pin);
    return it != device().pinModes.end() && it->second == OUTPUT;
}

}  // namespace shim

// Host stand-in for Device OS's "Particle.h", for building src/main.cpp with g++ (make test).
//
// It declares, with the signatures of Device OS 6.x, exactly the calls the application makes, so that a
// call the real headers reject (wrong callback type, wrong flag type, a pin the platform lacks) fails
// the host build as well. Sources (github.com/particle-iot/device-os):
//   wiring/inc/spark_wiring_ledger.h    Ledger, LedgerData, OnSyncCallback, isValid(), lastSynced()
//   wiring/inc/spark_wiring_variant.h   Variant: isNull/isString/value<T>/toString
//   wiring/inc/spark_wiring_cloud.h     CloudClass: publish overloads -> particle::Future<bool>,
//                                       PublishFlags and PUBLIC/PRIVATE/NO_ACK/WITH_ACK, function(),
//                                       connected(), maxEventDataSize(), ledger()
//   wiring/inc/spark_wiring_async.h     Future<ResultT>: operator ResultT() waits for the result
//   wiring/inc/spark_wiring_logging.h   Logger (printf-checked formats), Log, SerialLogHandler
//   wiring/inc/spark_wiring_system.h    SystemClass::version()
//   wiring/inc/spark_wiring.h           pinMode(), digitalWrite()
//   platform/shared/inc/platforms.h     PLATFORM_* ids (as listed for Device OS 6.1.1)
// Only the behaviour lives elsewhere (shim_device.cpp, driven through shim_control.h).
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

// --- platforms (platforms.h); the build picks one with -DPLATFORM_ID=<id> -----------------------------
#define PLATFORM_ARGON 12
#define PLATFORM_BORON 13
#define PLATFORM_ESOMX 15
#define PLATFORM_BSOM 23
#define PLATFORM_B5SOM 25
#define PLATFORM_TRACKER 26
#define PLATFORM_TRACKERM 28
#define PLATFORM_P2 32
#define PLATFORM_MSOM 35
#ifndef PLATFORM_ID
#error "build with -DPLATFORM_ID=<id>: the application must choose per platform, as on a device"
#endif

// The Ledger API exists from Device OS 6.1.0 (spark_wiring_cloud.h: #if Wiring_Ledger).
#define Wiring_Ledger 1

// --- ticks, random, pins ----------------------------------------------------------------------------
typedef uint32_t system_tick_t;
typedef int64_t time64_t;  // time_compat.h
typedef uint16_t hal_pin_t;
typedef hal_pin_t pin_t;

system_tick_t millis(void);
int random(int min, int max);
extern "C" uint32_t HAL_RNG_GetRandomNumber(void);

typedef enum PinMode { INPUT, OUTPUT, INPUT_PULLUP, INPUT_PULLDOWN, AF_OUTPUT_PUSHPULL, AN_INPUT, PIN_MODE_NONE = 0xFF } PinMode;
#define LOW 0
#define HIGH 1
extern "C" {
void pinMode(hal_pin_t pin, PinMode mode);
void digitalWrite(hal_pin_t pin, uint8_t value);
}

// Digital pins as Device OS's pinmap defines them (macros). D7 is absent on the E404X (esomx): its
// pin list goes D0, D1, D2, D5, ... (Device OS test wiring for PLATFORM_ESOMX).
#define D0 0
#define D1 1
#define D2 2
#define D3 3
#define D4 4
#define D5 5
#define D6 6
#if PLATFORM_ID != PLATFORM_ESOMX
#define D7 7
#endif

// --- String (spark_wiring_string.h), the members the application uses --------------------------------
class String {
public:
    String(const char* cstr = "") : s_(cstr ? cstr : "") {}
    const char* c_str() const { return s_.c_str(); }
    unsigned length(void) const { return static_cast<unsigned>(s_.size()); }
    unsigned char equals(const char* cstr) const { return s_ == (cstr ? cstr : ""); }
    unsigned char operator==(const char* cstr) const { return equals(cstr); }
    unsigned char operator==(const String& rhs) const { return s_ == rhs.s_; }
    void setCharAt(unsigned index, char c) {
        if (index < s_.size()) s_[index] = c;
    }
    char charAt(unsigned index) const { return index < s_.size() ? s_[index] : '\0'; }

private:
    std::string s_;
};

struct ShimLedgerInstance;  // the simulated ledger_instance (system_ledger.h)

namespace particle {

class Variant;
typedef std::vector<std::pair<String, Variant>> VariantMap;  // Map<String, Variant> on the device

// --- Variant (spark_wiring_variant.h) -----------------------------------------------------------------
class Variant {
public:
    enum Type { NULL_, BOOL, INT, UINT, INT64, UINT64, DOUBLE, STRING, BUFFER, ARRAY, MAP };

    Variant() = default;
    Variant(bool val) : v_(val) {}
    Variant(int val) : v_(val) {}
    Variant(double val) : v_(val) {}
    Variant(const char* val) : v_(String(val)) {}
    Variant(String val) : v_(std::move(val)) {}
    Variant(VariantMap val);

    Type type() const;
    bool isNull() const { return std::holds_alternative<std::monostate>(v_); }
    bool isBool() const { return std::holds_alternative<bool>(v_); }
    bool isString() const { return std::holds_alternative<String>(v_); }
    bool isMap() const;
    String toString() const;

    // The real template is limited to the alternative types by a static_assert.
    template<typename T>
    T& value() {
        return std::get<T>(v_);
    }
    template<typename T>
    const T& value() const {
        return std::get<T>(v_);
    }

private:
    std::variant<std::monostate, bool, int, double, String, std::shared_ptr<VariantMap>> v_;
};

// --- LedgerData and Ledger (spark_wiring_ledger.h) ----------------------------------------------------
class LedgerData {
public:
    LedgerData() = default;
    bool set(const char* name, Variant val);
    Variant get(const char* name) const;  // a null Variant when there is no such entry
    bool has(const char* name) const;
    Variant& operator[](const char* name);  // creates the entry when missing
    int size() const { return static_cast<int>(entries_.size()); }

private:
    VariantMap entries_;
};

class Ledger {
public:
    typedef void (*OnSyncCallback)(Ledger ledger, void* arg);
    typedef std::function<void(Ledger)> OnSyncFunction;

    Ledger() = default;  // an invalid instance
    explicit Ledger(std::shared_ptr<ShimLedgerInstance> instance) : instance_(std::move(instance)) {}

    LedgerData get() const;
    time64_t lastSynced() const;  // ms since the Unix epoch; 0 if never synchronized
    const char* name() const;
    bool isValid() const { return instance_ != nullptr; }
    int onSync(OnSyncCallback callback, void* arg = nullptr);
    int onSync(OnSyncFunction callback);

    bool operator==(const Ledger& ledger) const { return instance_ == ledger.instance_; }
    bool operator!=(const Ledger& ledger) const { return instance_ != ledger.instance_; }

private:
    std::shared_ptr<ShimLedgerInstance> instance_;
};

// --- Future (spark_wiring_async.h) ---------------------------------------------------------------------
template<typename ResultT>
class Future {
public:
    explicit Future(ResultT result) : result_(result) {}
    bool isSucceeded() const { return result_; }
    bool isDone() const { return true; }
    ResultT result() const { return result_; }
    operator ResultT() const { return result(); }  // the device waits for the operation here

private:
    ResultT result_;
};

}  // namespace particle

using particle::Ledger;
using particle::LedgerData;
using particle::Variant;

// --- publish flags (spark_wiring_cloud.h: PublishFlags = particle::Flags<PublishFlagType, uint8_t>) ----
class PublishFlags {
public:
    class FlagType {
    public:
        explicit constexpr FlagType(uint8_t v) : v_(v) {}
        constexpr uint8_t value() const { return v_; }

    private:
        uint8_t v_;
    };
    constexpr PublishFlags() : v_(0) {}
    constexpr PublishFlags(FlagType flag) : v_(flag.value()) {}
    constexpr PublishFlags operator|(PublishFlags other) const { return PublishFlags(v_ | other.v_, 0); }
    constexpr uint8_t value() const { return v_; }

private:
    constexpr PublishFlags(int v, int) : v_(static_cast<uint8_t>(v)) {}
    uint8_t v_;
};
typedef PublishFlags::FlagType PublishFlag;
constexpr PublishFlags operator|(PublishFlag a, PublishFlag b) { return PublishFlags(a) | PublishFlags(b); }

// Values of PUBLISH_EVENT_FLAG_* (system_cloud.h).
const PublishFlag PUBLIC(0x00);
const PublishFlag PRIVATE(0x01);
const PublishFlag NO_ACK(0x02);
const PublishFlag WITH_ACK(0x08);

typedef int(user_function_int_str_t)(String paramString);
typedef std::function<user_function_int_str_t> user_std_function_int_str_t;

// --- Particle (CloudClass) ------------------------------------------------------------------------------
class CloudClass {
public:
    template<typename T, class... Types>
    static inline bool function(const T& name, Types... args) {
        return _function(name, args...);
    }
    static bool _function(const char* funcKey, user_function_int_str_t* func);
    static bool _function(const char* funcKey, user_std_function_int_str_t func, void* reserved = nullptr);

    particle::Future<bool> publish(const char* eventName, const char* eventData, PublishFlags flags1,
                                   PublishFlags flags2 = PublishFlags());
    particle::Future<bool> publish(const char* eventName, const char* eventData, int ttl, PublishFlags flags1,
                                   PublishFlags flags2 = PublishFlags());

    static bool connected(void);
    static int maxEventDataSize();
    static particle::Ledger ledger(const char* name);
};
extern CloudClass Particle;

// --- logging (spark_wiring_logging.h) -------------------------------------------------------------------
enum LogLevel { LOG_LEVEL_ALL = 1, LOG_LEVEL_TRACE = 1, LOG_LEVEL_INFO = 30, LOG_LEVEL_WARN = 40, LOG_LEVEL_ERROR = 50 };

class Logger {
public:
    void trace(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
    void info(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
    void warn(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
    void error(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
};
extern const Logger Log;

class SerialLogHandler {
public:
    explicit SerialLogHandler(LogLevel level = LOG_LEVEL_INFO);
};

// --- System (spark_wiring_system.h) ---------------------------------------------------------------------
class SystemClass {
public:
    static String version();
};
extern SystemClass System;

// --- application macros ----------------------------------------------------------------------------------
// PRODUCT_VERSION: a uint16_t in the module info on the device.
#define PRODUCT_VERSION(x) static_assert((x) > 0 && (x) <= 0xFFFF, "PRODUCT_VERSION must fit in uint16_t")

// SYSTEM_THREAD(ENABLED): from Device OS 6.2 threading is always on and the macro is deprecated; the
// shim turns that deprecation into a warning (an error under -Werror) when built with
// -DSYSTEM_VERSION_v620, as a 6.2 build would define it.
namespace shim_detail {
enum SystemThreadState { ENABLED, DISABLED };
#ifdef SYSTEM_VERSION_v620
[[deprecated("SYSTEM_THREAD() is deprecated from Device OS 6.2: threading is always enabled")]]
#endif
inline bool systemThread(SystemThreadState) { return true; }
}  // namespace shim_detail
#define SYSTEM_THREAD(state) \
    [[maybe_unused]] static const bool shim_system_thread_##state = shim_detail::systemThread(shim_detail::state)

// Every setting of the Tokenflow firmware, in one place. Change these, rebuild, and upload the binary to
// the Particle product (bump TOKENFLOW_PRODUCT_VERSION for each upload).
#pragma once

// --- Blynk (Blynk.Console -> Developer Zone -> your template -> Firmware configuration) ---
#define BLYNK_TEMPLATE_ID "TMPLxxxxxxxxx"
#define BLYNK_TEMPLATE_NAME "Connect a Particle device"

// --- Firmware version ---
// Particle product firmware version (an integer, must increase with every upload to the product).
#define TOKENFLOW_PRODUCT_VERSION 1
// Reported in the status event as fw=... (letters, digits and . - _ + only).
#define TOKENFLOW_FIRMWARE_VERSION "1.0.0"

// --- Ledger (Particle Console -> your product -> Cloud services -> Ledger) ---
// The device-scoped Cloud-to-Device Ledger Tokenflow writes; the same name as the stack's LedgerName.
#define TOKENFLOW_LEDGER_NAME "blynk-tokens-c2d"
// The key that holds the Blynk AuthToken inside the Ledger.
#define TOKENFLOW_LEDGER_KEY "blynk_token"
// The key that says why the token is empty: "revoked" or "transferred" (the cloud's cleared state).
#define TOKENFLOW_LEDGER_STATE_KEY "state"

// --- Events (each must match an integration in firmware/integrations/) ---
// Data to Blynk: the integration blynk_https_get.json forwards it to Blynk's HTTPS API.
#define TOKENFLOW_BLYNK_EVENT "blynk_https_get"
// Token state reports: the integration tokenflow-status.json forwards them to the Tokenflow API.
#define TOKENFLOW_STATUS_EVENT "tokenflow/status"

// --- Timing (milliseconds) ---
// How often the readings go to Blynk (the blueprint's 5 minutes).
#define TOKENFLOW_PUBLISH_INTERVAL_MS 300000UL
// Without a token, the status report repeats after 5 s, 10 s, 20 s, ... up to every 10 minutes,
// each wait lengthened by up to TOKENFLOW_STATUS_JITTER_PERCENT % so a fleet does not report in step.
#define TOKENFLOW_STATUS_FIRST_RETRY_MS 5000UL
#define TOKENFLOW_STATUS_MAX_RETRY_MS 600000UL
#define TOKENFLOW_STATUS_JITTER_PERCENT 20UL
// With a token, one status report a day besides those after each connect and Ledger sync (0: none).
#define TOKENFLOW_STATUS_HEARTBEAT_MS 86400000UL
// A Cloud-to-Device Ledger is read from flash at boot and may be stale (a token revoked while the
// device was off). Data to Blynk waits for the first Ledger sync after boot, or at most this long after
// the first cloud connection (then the flash copy is used). 0: wait for the sync without a bound.
// Status reports never wait.
#define TOKENFLOW_FIRST_SYNC_GRACE_MS 60000UL
// Wait after a failed publish before trying it again.
#define TOKENFLOW_PUBLISH_RETRY_MS 10000UL
// Particle's publish limit: about one event per second, bursts of up to four. Every publish of the
// firmware goes through a token bucket with these numbers; do not raise them.
#define TOKENFLOW_PUBLISH_BURST 4UL
#define TOKENFLOW_PUBLISH_REFILL_MS 1000UL

// What differs between the platforms this firmware builds for (firmware/README.md, "Platforms").
// Every platform that runs Device OS 6.1 or later, which Ledger needs, is listed; anything else
// stops the build here with a reason instead of failing later on a missing pin or API.
#pragma once

#if PLATFORM_ID == PLATFORM_ARGON || PLATFORM_ID == PLATFORM_P2
#define TOKENFLOW_PLATFORM_NETWORK "Wi-Fi"
#elif PLATFORM_ID == PLATFORM_BORON || PLATFORM_ID == PLATFORM_BSOM || PLATFORM_ID == PLATFORM_B5SOM || \
    PLATFORM_ID == PLATFORM_ESOMX || PLATFORM_ID == PLATFORM_TRACKER || PLATFORM_ID == PLATFORM_TRACKERM
#define TOKENFLOW_PLATFORM_NETWORK "cellular"
#elif PLATFORM_ID == PLATFORM_MSOM
#define TOKENFLOW_PLATFORM_NETWORK "cellular and Wi-Fi"
#else
#error "Tokenflow reads its token from a Ledger: it needs Device OS 6.1+ on argon, boron, bsom, b5som, esomx (E404X), tracker, trackerm, p2 (Photon 2/P2) or msom"
#endif

// The blueprint's LED (blynk_led): the blue user LED on D7 of the Argon, Boron and Photon 2. The SoMs
// (B-SoM, B5-SoM, M-SoM, P2 module, Tracker SoM, E404X) have no user LED of their own and the E404X
// has no D7 at all, so there the LED state is only reported (v16/v17), no pin is touched. A carrier
// board with its own LED: build with -DTOKENFLOW_LED_PIN=<pin> (or define it in tokenflow_config.h);
// a P2 module on a board where D7 is wired to something else: build with -DTOKENFLOW_NO_LED.
#if !defined(TOKENFLOW_LED_PIN) && !defined(TOKENFLOW_NO_LED) && (PLATFORM_ID == PLATFORM_ARGON || PLATFORM_ID == PLATFORM_BORON || PLATFORM_ID == PLATFORM_P2)
#define TOKENFLOW_LED_PIN D7
#endif

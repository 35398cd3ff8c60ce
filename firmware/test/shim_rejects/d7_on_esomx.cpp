// Must NOT compile (built with -DPLATFORM_ID=15): the E404X has no D7.
#include "Particle.h"
void useLed() { pinMode(D7, OUTPUT); }

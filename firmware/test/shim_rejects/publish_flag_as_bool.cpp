// Must NOT compile: publish flags are PublishFlags (PRIVATE, WITH_ACK, ...), not a bool or an int.
#include "Particle.h"
bool send() { return Particle.publish("tokenflow/status", "v=1", true); }

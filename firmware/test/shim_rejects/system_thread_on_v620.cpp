// Must NOT compile under -Werror with -DSYSTEM_VERSION_v620: SYSTEM_THREAD is deprecated from 6.2.
#include "Particle.h"
SYSTEM_THREAD(ENABLED);

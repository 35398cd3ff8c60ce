// Must NOT compile: Ledger::OnSyncCallback is void (*)(Ledger, void*), OnSyncFunction void(Ledger).
#include "Particle.h"
void onSync(Ledger&) {}
void subscribe(Ledger ledger) { ledger.onSync(onSync); }

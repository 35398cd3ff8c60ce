// Tokenflow device core: include this one header.
#pragma once

#include "controller.h"
#include "json_writer.h"
#include "ledger.h"
#include "pacing.h"
#include "sha256.h"
#include "status.h"
#include "token.h"

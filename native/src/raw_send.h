// Sending a whole IP packet the agent built (a reset to a local server), through a raw socket.
#pragma once
#include <napi.h>

void RegisterRawSend(Napi::Env env, Napi::Object exports);

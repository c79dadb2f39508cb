// One conntrack lookup over ctnetlink, for the whois API's view of a connection a NAT translates.
#pragma once
#include <napi.h>

void RegisterConntrack(Napi::Env env, Napi::Object exports);

// Notifications of changes to this network namespace's nftables ruleset, on the event loop.
#pragma once
#include <napi.h>

void RegisterRulesetEvents(Napi::Env env, Napi::Object exports);

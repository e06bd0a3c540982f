// The objective policies of the registry, one file each, and helpers they share.
#pragma once
#include <map>
#include <string>

#include "mdx/corrupt/objective.h"

namespace mdx {

ObjectiveEntry umd_objective();   // umd.cpp
ObjectiveEntry mae_objective();   // mae.cpp
ObjectiveEntry ldae_objective();  // ldae.cpp
ObjectiveEntry dit_objective();   // dit.cpp
ObjectiveEntry mage_objective();  // mage.cpp

// A number from a checkpoint configuration, `fallback` when absent; Error when malformed.
double config_double(const std::map<std::string, std::string>& config, const std::string& key, double fallback);
bool config_flag(const std::map<std::string, std::string>& config, const std::string& key, bool fallback);

}  // namespace mdx

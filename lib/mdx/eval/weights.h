// Which weights a tool evaluates. Probes and representation FDs take the raw weights (UMD and MAE
// evaluate their encoders so; MAE keeps no EMA); sampling takes the EMA (DiT's and UMD's
// generation runs). A checkpoint trained without an EMA (--ema 0) has only the raw ones.
#pragma once
#include <string>

namespace CLI {
class App;
}

namespace mdx {

enum class Weights { Raw, Ema };

// --weights raw|ema, defaulting to the value `weights` holds (mdx-embed, mdx-sample, mdx-fid).
void add_weights_option(CLI::App& app, Weights& weights, const std::string& help);
const char* weights_name(Weights w);

}  // namespace mdx

// SIGINT, SIGTERM and SIGHUP become a flag that long loops poll, so that outputs are cleaned up (or, in
// mdx-train, a checkpoint is written) instead of the process dying mid-write.
#pragma once

namespace mdx {

void install_signal_handlers();
int pending_signal();     // 0 when none arrived
void check_interrupt();   // throws Interrupted when a signal arrived

}  // namespace mdx

// What the simulated driver reads out of a PTX module: its entries, their parameter sizes, launch bounds and
// static shared memory. Enough to resolve entries to simulator launchers and enforce launch limits.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mobius_sim::ptx {

struct Entry {
    std::string name;
    std::vector<unsigned> param_sizes;  // bytes, in declaration order
    unsigned max_threads = 0;           // product of .maxntid / .reqntid; 0 when the kernel has no bounds
    unsigned static_shared_bytes = 0;   // every .shared variable the entry declares or references
};

struct Module {
    unsigned target_sm = 0;  // .target sm_XY -> XY
    std::vector<Entry> entries;
};

// Parses `text`; on failure returns false with a one-line reason in `error`.
bool parse(std::string_view text, Module& module, std::string& error);

}  // namespace mobius_sim::ptx

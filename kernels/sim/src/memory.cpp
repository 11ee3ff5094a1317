// Simulated device memory: host mappings with guard pages, redzones and NaN poison.
//
// Layout of one allocation of `size` bytes (span = size rounded up to 256, at least 256):
//   [guard page][head slack ... | data (size) | tail slack][guard page]
//                               ^ 256-aligned; data + span ends exactly at the second guard page
// Reading or writing past the span faults on the guard page at once; writes into the slack (the last
// partial 256 bytes, or anything before the data) are found by the redzone check after each launch.
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "internal.h"
#include "mobius_sim/runtime.h"

namespace mobius_sim {
namespace {

constexpr std::size_t kAlign = 256;
constexpr unsigned char kRedzoneByte = 0xFF;  // 0xFFFFFFFF is a NaN, so reads of the slack poison results too

std::size_t page_size() {
    static const std::size_t p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

struct Allocation {
    std::uint64_t id;
    unsigned char* data;
    std::size_t size;
    std::size_t span;
    unsigned char* map;
    std::size_t map_size;

    unsigned char* slack_begin() const { return map + page_size(); }
    unsigned char* span_end() const { return data + span; }
};

struct Heap {
    std::map<std::uintptr_t, Allocation> live;  // by data address
    std::size_t used = 0;
    std::uint64_t next_id = 1;
    std::size_t total = detail::parse_size(std::getenv("MOBIUS_SIM_DEVICE_MEMORY"), std::size_t{16} << 30);
};

Heap& heap() {
    static Heap h;
    return h;
}

// Index of the first byte in [p, p + n) that differs from the redzone pattern, or n.
std::size_t first_damaged(const unsigned char* p, std::size_t n) {
    static const std::array<unsigned char, 4096> pattern = [] {
        std::array<unsigned char, 4096> a;
        a.fill(kRedzoneByte);
        return a;
    }();
    for (std::size_t off = 0; off < n; off += pattern.size()) {
        const std::size_t len = std::min(pattern.size(), n - off);
        if (std::memcmp(p + off, pattern.data(), len) != 0) {
            for (std::size_t i = 0; i < len; ++i)
                if (p[off + i] != kRedzoneByte) return off + i;
        }
    }
    return n;
}

const Allocation* containing(std::uintptr_t address, std::size_t bytes) {
    auto& live = heap().live;
    auto it = live.upper_bound(address);
    if (it == live.begin()) return nullptr;
    --it;
    const Allocation& a = it->second;
    auto base = reinterpret_cast<std::uintptr_t>(a.data);
    if (address >= base && address - base <= a.size && bytes <= a.size - (address - base)) return &a;
    return nullptr;
}

}  // namespace

Status device_alloc(std::size_t bytes, std::uint64_t* address) {
    std::lock_guard lock(detail::api_mutex());
    if (address == nullptr || bytes == 0) return Status::InvalidValue;
    Heap& h = heap();
    const std::size_t span = round_up(bytes, kAlign);
    if (span < bytes || span > h.total - std::min(h.total, h.used)) return Status::OutOfMemory;
    const std::size_t page = page_size();
    const std::size_t body = round_up(span, page);
    const std::size_t map_size = body + 2 * page;
    void* m = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return Status::OutOfMemory;
    auto* map = static_cast<unsigned char*>(m);
    mprotect(map, page, PROT_NONE);
    mprotect(map + page + body, page, PROT_NONE);
    Allocation a{h.next_id++, map + page + body - span, bytes, span, map, map_size};
    std::memset(a.slack_begin(), kRedzoneByte, static_cast<std::size_t>(a.data - a.slack_begin()));
    std::memset(a.data + a.size, kRedzoneByte, a.span - a.size);
    if (!options().dry) detail::poison(a.data, a.size);  // dry: zeros, so that values stay finite with nothing computed
    h.used += span;
    h.live.emplace(reinterpret_cast<std::uintptr_t>(a.data), a);
    *address = reinterpret_cast<std::uint64_t>(a.data);
    return Status::Success;
}

Status device_free(std::uint64_t address) {
    std::lock_guard lock(detail::api_mutex());
    Heap& h = heap();
    auto it = h.live.find(static_cast<std::uintptr_t>(address));
    if (it == h.live.end()) return Status::InvalidValue;
    h.used -= it->second.span;
    munmap(it->second.map, it->second.map_size);
    h.live.erase(it);
    return Status::Success;
}

void device_free_all() {
    std::lock_guard lock(detail::api_mutex());
    Heap& h = heap();
    for (auto& [addr, a] : h.live) munmap(a.map, a.map_size);
    h.live.clear();
    h.used = 0;
}

bool find_allocation(std::uint64_t address, std::size_t bytes, AllocationInfo* info) {
    std::lock_guard lock(detail::api_mutex());
    const Allocation* a = containing(static_cast<std::uintptr_t>(address), bytes);
    if (a == nullptr) return false;
    if (info) *info = {reinterpret_cast<std::uint64_t>(a->data), a->size, a->id};
    return true;
}

std::size_t device_memory_total() { return heap().total; }
std::size_t device_memory_used() {
    std::lock_guard lock(detail::api_mutex());
    return heap().used;
}

namespace detail {

std::recursive_mutex& api_mutex() {
    static std::recursive_mutex m;
    return m;
}

void poison(unsigned char* p, std::size_t n) {
    // The pattern goes into the first 256 bytes word by word, then doubles by memcpy: a block's shared memory
    // is poisoned before every block, so this runs at memcpy's speed rather than a word at a time.
    const std::size_t words = n / 4;
    const std::size_t seed = std::min<std::size_t>(words, 64);
    for (std::size_t i = 0; i < seed; ++i) std::memcpy(p + 4 * i, &kNanPoisonBits, 4);
    for (std::size_t done = seed; done < words;) {
        const std::size_t chunk = std::min(done, words - done);
        std::memcpy(p + 4 * done, p, 4 * chunk);
        done += chunk;
    }
    std::memset(p + words * 4, kRedzoneByte, n - words * 4);
}

std::size_t parse_size(const char* text, std::size_t fallback) {
    if (text == nullptr || *text == '\0') return fallback;
    char* end = nullptr;
    unsigned long long v = std::strtoull(text, &end, 10);
    if (end == text) return fallback;
    switch (*end) {
        case 'k': case 'K': v <<= 10; break;
        case 'm': case 'M': v <<= 20; break;
        case 'g': case 'G': v <<= 30; break;
        default: break;
    }
    return static_cast<std::size_t>(v);
}

// The first damaged redzone of one allocation, described, and repaired; empty when both are intact.
std::string check_allocation(std::uintptr_t addr, const Allocation& a) {
    unsigned char* head = a.slack_begin();
    const std::size_t head_len = static_cast<std::size_t>(a.data - head);
    const std::size_t tail_len = a.span - a.size;
    std::size_t bad = first_damaged(head, head_len);
    if (bad < head_len) {
        std::ostringstream out;
        out << "write " << head_len - bad << " bytes before the start of allocation #" << a.id << " ("
            << a.size << " bytes at 0x" << std::hex << addr << ")";
        std::memset(head, kRedzoneByte, head_len);
        return out.str();
    }
    bad = first_damaged(a.data + a.size, tail_len);
    if (bad < tail_len) {
        std::ostringstream out;
        out << "write at byte " << bad << " past the end of allocation #" << a.id << " (" << a.size
            << " bytes at 0x" << std::hex << addr << ")";
        std::memset(a.data + a.size, kRedzoneByte, tail_len);
        return out.str();
    }
    return {};
}

std::string check_redzones() {
    for (auto& [addr, a] : heap().live) {
        if (std::string bad = check_allocation(addr, a); !bad.empty()) return bad;
    }
    return {};
}

std::string check_redzones(const std::uintptr_t* addresses, std::size_t count) {
    auto& live = heap().live;
    for (std::size_t i = 0; i < count; ++i) {
        // The allocation whose mapping holds the address: the last one starting at or before it, or the next one
        // when the address lies in that one's head slack.
        auto it = live.upper_bound(addresses[i]);
        if (it != live.end() && addresses[i] >= reinterpret_cast<std::uintptr_t>(it->second.map)) {
            if (std::string bad = check_allocation(it->first, it->second); !bad.empty()) return bad;
        }
        if (it == live.begin()) continue;
        --it;
        if (addresses[i] >= reinterpret_cast<std::uintptr_t>(it->second.map + it->second.map_size)) continue;
        if (std::string bad = check_allocation(it->first, it->second); !bad.empty()) return bad;
    }
    return {};
}

std::string describe_address(std::uintptr_t address) {
    std::ostringstream out;
    const std::size_t page = page_size();
    for (auto& [addr, a] : heap().live) {
        auto map = reinterpret_cast<std::uintptr_t>(a.map);
        if (address < map || address >= map + a.map_size) continue;
        if (address >= addr + a.size)
            out << (address - addr - a.size) << " bytes past the end of allocation #" << a.id;
        else if (address < addr)
            out << (addr - address) << " bytes before the start of allocation #" << a.id;
        else
            out << "inside allocation #" << a.id;
        out << " (" << a.size << " bytes at 0x" << std::hex << addr << ")";
        return out.str();
    }
    if (address < page) return "a null pointer (plus a small offset)";
    return "outside every device allocation";
}

MemorySnapshot snapshot_memory() {
    MemorySnapshot s;
    for (auto& [addr, a] : heap().live) s.blocks.push_back({a.id, a.data, std::vector<unsigned char>(a.data, a.data + a.size)});
    return s;
}

void restore_memory(const MemorySnapshot& snapshot) {
    for (const auto& b : snapshot.blocks) std::memcpy(b.data, b.bytes.data(), b.bytes.size());
}

std::string compare_memory(const MemorySnapshot& expected,
                           const std::unordered_map<std::uintptr_t, float>& atomic_magnitude) {
    for (const auto& b : expected.blocks) {
        const std::size_t n = b.bytes.size();
        if (std::memcmp(b.data, b.bytes.data(), n) == 0) continue;
        for (std::size_t off = 0; off < n; off += 4) {
            const std::size_t len = std::min<std::size_t>(4, n - off);
            if (std::memcmp(b.data + off, b.bytes.data() + off, len) == 0) continue;
            float first = 0, second = 0;
            if (len == 4) {
                std::memcpy(&first, b.bytes.data() + off, 4);
                std::memcpy(&second, b.data + off, 4);
                auto it = atomic_magnitude.find(reinterpret_cast<std::uintptr_t>(b.data + off));
                if (it != atomic_magnitude.end() && std::isfinite(first) && std::isfinite(second) &&
                    std::fabs(first - second) <= 1e-5f * it->second)
                    continue;
            }
            std::ostringstream out;
            out << "allocation #" << b.id << " byte offset " << off << " (float index " << off / 4 << ") is "
                << first << " in forward order but " << second << " in reverse order";
            return out.str();
        }
    }
    return {};
}

}  // namespace detail
}  // namespace mobius_sim

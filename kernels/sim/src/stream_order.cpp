// The stream-order check: a happens-before race detector over streams, at the granularity of allocations.
//
// The simulator runs every operation when it is enqueued, so two operations on different streams always run in
// the order the host issued them and a missing dependency between them can never show up as a wrong result. On a
// GPU they may run in either order, or at once. This file finds such pairs instead:
//   - Streams are numbered in the order the context first sees them: 0 is the legacy default stream, then created
//     streams and per-thread default streams. Every stream s has a vector clock VC_s (indexed by stream number):
//     VC_s[s] counts its operations, VC_s[t] says how many operations of stream t its next operation is ordered after.
//     The host has a clock too: what it has waited for.
//   - An operation on s joins VC_s with the host clock (work enqueued after the host waited is ordered after what it
//     waited for), applies the legacy stream's implicit barriers (below), then takes the next number VC_s[s] += 1.
//   - cuEventRecord(e, s) copies VC_s into e (recording again overwrites); cuStreamWaitEvent(s, e) joins e's clock
//     into VC_s (an event never recorded orders nothing). cuStreamSynchronize(s), and a successful cuStreamQuery(s),
//     join VC_s into the host clock; cuEventSynchronize(e) and cuEventQuery(e) join e's clock. cuCtxSynchronize,
//     cuMemAlloc and cuMemFree join every stream into the host clock: they are full barriers here.
//   - The legacy default stream (a null handle or CU_STREAM_LEGACY) waits for all earlier work of every blocking
//     stream (created with flags 0) and every blocking stream's later work waits for it, as in CUDA: an operation on
//     it joins every blocking stream's clock, and an operation on a blocking stream joins the legacy stream's clock.
//     Streams created with CU_STREAM_NON_BLOCKING take no part in this. CU_STREAM_PER_THREAD is one stream per host
//     thread, made at its first use; as in CUDA it is a blocking stream (it synchronises with the legacy stream).
//   - Each allocation remembers its last write (stream and operation number) and, per stream, its last read since.
//     A read must be ordered after the last write; a write after the last write and after every read since
//     (VC_s[t] >= the number of t's operation, or t == s). Then the read is recorded, or the write replaces the
//     write and forgets the reads (whatever is ordered after the write is ordered after them too).
// An access that is not ordered fails the operation before it runs, with a message naming both operations, both
// streams and the allocation. Accesses are whole allocations: a kernel's pointer parameter touches the allocation it
// points into (const pointee: read, otherwise write; see ParamAccess in device.h); cuBLAS, cuBLASLt, cuDNN, NCCL and
// the copies name their buffers. Memory the simulator poisons or repairs itself is no access.
#include <algorithm>
#include <map>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "internal.h"
#include "mobius_sim/cuda_api.h"

namespace mobius_sim::detail {
namespace {

void join(Clock& into, const Clock& from) {
    if (into.size() < from.size()) into.resize(from.size(), 0);
    for (std::size_t i = 0; i < from.size(); ++i) into[i] = std::max(into[i], from[i]);
}

struct Stream {
    Clock clock;
    bool blocking = false;    // ordered with the legacy stream
    bool per_thread = false;  // a CU_STREAM_PER_THREAD stream
};

// One access as an allocation remembers it.
struct Access {
    int stream = -1;  // -1: none
    std::uint64_t number = 0;
    const char* name = "";
    bool kernel = false;
};

struct History {
    Access last_write;
    std::vector<Access> reads;  // since the last write, the latest per stream
};

struct State {
    std::vector<Stream> streams = std::vector<Stream>(1);  // by number; 0 is the legacy default stream
    std::unordered_map<const void*, int> handles;  // created streams that are alive
    std::map<std::thread::id, int> per_thread;
    std::unordered_map<const void*, Clock> events;  // recorded events
    std::unordered_map<std::uint64_t, History> allocations;  // by allocation id
    Clock host;
};

State& state() {
    static State s;
    return s;
}

bool enabled() { return options().streamcheck; }

int new_stream(bool blocking, bool per_thread) {
    State& st = state();
    const int id = static_cast<int>(st.streams.size());
    Stream& s = st.streams.emplace_back();
    s.blocking = blocking;
    s.per_thread = per_thread;
    s.clock.assign(static_cast<std::size_t>(id) + 1, 0);
    return id;
}

// The number of a stream handle, or -1 for a handle this file never saw.
int find_stream(const void* handle) {
    State& st = state();
    if (handle == nullptr || handle == CU_STREAM_LEGACY) return 0;
    if (handle == CU_STREAM_PER_THREAD) {
        auto [it, added] = st.per_thread.try_emplace(std::this_thread::get_id(), 0);
        if (added) it->second = new_stream(true, true);
        return it->second;
    }
    auto it = st.handles.find(handle);
    return it == st.handles.end() ? -1 : it->second;
}

// The clock of the stream's next operation (or event record or wait): after what the host has waited for, and after
// the legacy stream's implicit barriers.
Clock& prepare(int id) {
    State& st = state();
    Clock& clock = st.streams[id].clock;
    join(clock, st.host);
    if (id == 0) {
        for (const Stream& s : st.streams)
            if (s.blocking) join(clock, s.clock);
    } else if (st.streams[id].blocking) {
        join(clock, st.streams[0].clock);
    }
    return clock;
}

std::string stream_text(int id) {
    if (id == 0) return "the legacy stream";
    std::string text = "stream " + std::to_string(id);
    if (state().streams[id].per_thread) text += " (a per-thread default stream)";
    return text;
}

std::string operation_text(const char* name, bool kernel) { return kernel ? std::string("kernel '") + name + "'" : std::string(name); }

}  // namespace

void stream_created(const void* stream, bool blocking) {
    if (enabled()) state().handles[stream] = new_stream(blocking, false);
}

void stream_destroyed(const void* stream) {
    // Its clock stays: work it still had queued is ordered with the legacy stream and host barriers as before.
    if (enabled()) state().handles.erase(stream);
}

void event_recorded(const void* event, const void* stream) {
    if (!enabled()) return;
    const int id = find_stream(stream);
    if (id < 0) state().events.erase(event);
    else state().events[event] = prepare(id);
}

void event_destroyed(const void* event) {
    if (enabled()) state().events.erase(event);
}

void stream_waits_event(const void* stream, const void* event) {
    if (!enabled()) return;
    State& st = state();
    const int id = find_stream(stream);
    auto it = st.events.find(event);
    if (id < 0 || it == st.events.end()) return;
    join(prepare(id), it->second);
}

void host_waits_stream(const void* stream) {
    if (!enabled()) return;
    const int id = find_stream(stream);
    if (id >= 0) join(state().host, state().streams[id].clock);
}

void host_waits_event(const void* event) {
    if (!enabled()) return;
    State& st = state();
    if (auto it = st.events.find(event); it != st.events.end()) join(st.host, it->second);
}

void host_waits_all() {
    if (!enabled()) return;
    State& st = state();
    for (const Stream& s : st.streams) join(st.host, s.clock);
}

void allocation_freed(std::uint64_t id) {
    if (enabled()) state().allocations.erase(id);
}

void stream_order_reset() { state() = State{}; }

Clock stream_clock(const void* stream) {
    if (!enabled()) return {};
    const int id = find_stream(stream);
    return id < 0 ? Clock{} : state().streams[id].clock;
}

void stream_join(const void* stream, const Clock& clock) {
    if (!enabled()) return;
    const int id = find_stream(stream);
    if (id >= 0) join(state().streams[id].clock, clock);
}

StreamOperation::StreamOperation(const void* stream, const char* name, bool kernel)
    : stream_(stream), name_(name), kernel_(kernel), enabled_(enabled()) {}

void StreamOperation::add(std::uint64_t address, bool write) {
    if (!enabled_ || address == 0) return;
    AllocationInfo info;
    if (!find_allocation(address, 1, &info)) return;
    for (Item& item : items_) {
        if (item.allocation.id == info.id) {
            item.write = item.write || write;
            return;
        }
    }
    items_.push_back({info, write});
}

std::string StreamOperation::check() {
    if (!enabled_) return {};
    id_ = find_stream(stream_);
    if (id_ < 0) return {};  // a stream created while the check was off
    Clock& clock = prepare(id_);
    if (clock.size() <= static_cast<std::size_t>(id_)) clock.resize(static_cast<std::size_t>(id_) + 1, 0);
    number_ = ++clock[id_];
    State& st = state();
    auto ordered = [&](const Access& a) {
        return a.stream == id_ || (static_cast<std::size_t>(a.stream) < clock.size() && clock[a.stream] >= a.number);
    };
    for (const Item& item : items_) {
        auto it = st.allocations.find(item.allocation.id);
        if (it == st.allocations.end()) continue;
        const History& h = it->second;
        const Access* other = nullptr;
        if (h.last_write.stream >= 0 && !ordered(h.last_write)) other = &h.last_write;
        for (std::size_t i = 0; other == nullptr && item.write && i < h.reads.size(); ++i)
            if (!ordered(h.reads[i])) other = &h.reads[i];
        if (other == nullptr) continue;
        std::ostringstream o;
        o << "stream race: " << operation_text(name_, kernel_) << " on " << stream_text(id_) << (item.write ? " writes" : " reads")
          << " allocation #" << item.allocation.id << " (" << item.allocation.size << " bytes at 0x" << std::hex << item.allocation.address
          << std::dec << ") that " << stream_text(other->stream) << (other == &h.last_write ? " wrote" : " read") << " at its operation "
          << other->number << " (" << operation_text(other->name, other->kernel)
          << "), with no event, stream or host synchronisation ordering the two";
        return o.str();
    }
    return {};
}

void StreamOperation::commit() {
    if (!enabled_ || id_ < 0) return;
    State& st = state();
    const Access access{id_, number_, name_, kernel_};
    for (const Item& item : items_) {
        History& h = st.allocations[item.allocation.id];
        if (item.write) {
            h.last_write = access;
            h.reads.clear();
            continue;
        }
        auto same = std::find_if(h.reads.begin(), h.reads.end(), [&](const Access& a) { return a.stream == id_; });
        if (same != h.reads.end()) *same = access;
        else h.reads.push_back(access);
    }
}

std::string StreamOperation::enqueue() {
    std::string race = check();
    if (race.empty()) commit();
    return race;
}

}  // namespace mobius_sim::detail

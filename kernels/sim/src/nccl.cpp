// The simulated NCCL subset the C# bindings use: communicators from ncclCommInitAll (one process, one thread driving
// every rank), fp32 all-reduce (sum, avg) and broadcast inside ncclGroupStart/ncclGroupEnd, run on the host when the
// outermost group ends. The simulator completes launches and copies when they are issued, so that is stream order.
// Each collective is an operation of its rank's stream for the stream-order check: it reads the rank's send buffer
// (where the rank sends) and writes its receive buffer, checked against earlier work before anything of the group runs.
// A collective orders its ranks' streams as its data flow does: an all-reduce every rank's later work after every
// rank's collective, a broadcast every rank's later work after the root's.
// The reduction sums in rank order, in fp32. Where it departs from NCCL: ranks may share the simulator's one device
// (NCCL refuses a device twice in a communicator), which is what lets tests run several ranks here.
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "internal.h"
#include "mobius_sim/cuda_api.h"
#include "mobius_sim/runtime.h"

extern "C" {
typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
} ncclResult_t;
typedef enum { ncclFloat32 = 7 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclAvg = 4 } ncclRedOp_t;
typedef struct ncclComm* ncclComm_t;
}

namespace {

using mobius_sim::detail::api_mutex;

constexpr int kVersion = 22703;  // reported as NCCL 2.27.3

struct Clique {
    int ranks = 0;
};

enum class Kind { AllReduce, Broadcast };

struct Op {
    Kind kind;
    const void* send;
    void* recv;
    std::size_t count;
    int datatype;
    int op;    // all-reduce
    int root;  // broadcast
    ncclComm_t comm;
    const void* stream;  // the rank's stream
};

struct Group {
    int depth = 0;
    std::vector<Op> ops;
};

}  // namespace

struct ncclComm {
    std::shared_ptr<Clique> clique;
    int rank = 0;
};

namespace {

std::map<ncclComm_t, std::unique_ptr<ncclComm>>& comms() {
    static std::map<ncclComm_t, std::unique_ptr<ncclComm>> c;
    return c;
}

// NCCL's group state is the calling thread's; no thread_local may live in this module (see CMakeLists.txt).
std::map<std::thread::id, Group>& groups() {
    static std::map<std::thread::id, Group> g;
    return g;
}

ncclResult_t fail(ncclResult_t r, const std::string& message) {
    mobius_sim::detail::set_last_error("nccl: " + message);
    return r;
}

bool sends(const Op& op) { return op.kind == Kind::AllReduce || op.comm->rank == op.root; }

bool valid_buffer(const void* p, std::size_t count) {
    mobius_sim::AllocationInfo info;
    return count == 0 || mobius_sim::find_allocation(reinterpret_cast<std::uintptr_t>(p), count * sizeof(float), &info);
}

ncclResult_t check(const Op& op) {
    if (comms().count(op.comm) == 0) return fail(ncclInvalidArgument, "invalid communicator");
    if (op.datatype != ncclFloat32) return fail(ncclInvalidArgument, "the simulator reduces fp32 (ncclFloat32) only");
    if (op.kind == Kind::AllReduce && op.op != ncclSum && op.op != ncclAvg) return fail(ncclInvalidArgument, "the simulator's all-reduce sums or averages");
    if (op.kind == Kind::Broadcast && (op.root < 0 || op.root >= op.comm->clique->ranks)) return fail(ncclInvalidArgument, "broadcast root is not a rank");
    if ((sends(op) && !valid_buffer(op.send, op.count)) || !valid_buffer(op.recv, op.count)) {
        return fail(ncclInvalidArgument, "a buffer is not device memory of count floats");
    }
    return ncclSuccess;
}

// Runs the ops of a finished group: the i-th op of each communicator of a clique meets the i-th of every other.
ncclResult_t run(std::vector<Op>& ops) {
    std::map<Clique*, std::vector<std::vector<const Op*>>> byClique;  // clique -> rank -> its ops in order
    for (const Op& op : ops) {
        auto& ranks = byClique[op.comm->clique.get()];
        ranks.resize(op.comm->clique->ranks);
        ranks[op.comm->rank].push_back(&op);
    }
    for (auto& [clique, ranks] : byClique) {
        const std::size_t n = ranks[0].size();
        for (const auto& mine : ranks) {
            if (mine.size() != n) return fail(ncclInvalidUsage, "the ranks of a communicator issued different numbers of collectives (NCCL would hang)");
        }
        for (std::size_t i = 0; i < n; i++) {
            const Op& first = *ranks[0][i];
            for (const auto& mine : ranks) {
                const Op& o = *mine[i];
                if (o.kind != first.kind || o.count != first.count || o.op != first.op || o.root != first.root) {
                    return fail(ncclInvalidUsage, "the ranks' collectives do not match (kind, count, op or root)");
                }
            }
        }
    }
    // Every op against the work before the group (the ranks of one collective do not race with each other: NCCL
    // synchronises them), then the clock of its stream as of the op.
    std::vector<mobius_sim::detail::StreamOperation> order;
    std::vector<mobius_sim::detail::Clock> clocks;
    order.reserve(ops.size());
    for (const Op& op : ops) {
        auto& o = order.emplace_back(op.stream, op.kind == Kind::AllReduce ? "ncclAllReduce" : "ncclBroadcast");
        if (sends(op)) o.read(op.send);
        o.write(op.recv);
        if (const std::string race = o.check(); !race.empty()) {
            mobius_sim::detail::make_sticky(CUDA_ERROR_LAUNCH_FAILED, "nccl: " + race);
            return ncclUnhandledCudaError;
        }
        clocks.push_back(mobius_sim::detail::stream_clock(op.stream));
    }
    for (auto& o : order) o.commit();
    auto index = [&](const Op* op) { return static_cast<std::size_t>(op - ops.data()); };
    for (auto& [clique, ranks] : byClique) {
        const std::size_t n = ranks[0].size();
        for (std::size_t i = 0; i < n; i++) {
            const Op& first = *ranks[0][i];
            for (const auto& mine : ranks)
                for (std::size_t r = 0; r < ranks.size(); r++)
                    if (first.kind == Kind::AllReduce || static_cast<int>(r) == first.root)
                        mobius_sim::detail::stream_join(mine[i]->stream, clocks[index(ranks[r][i])]);
        }
    }
    for (auto& [clique, ranks] : byClique) {
        const std::size_t n = ranks[0].size();
        for (std::size_t i = 0; i < n; i++) {
            const Op& first = *ranks[0][i];
            const std::size_t count = first.count;
            if (first.kind == Kind::Broadcast) {
                std::vector<float> values(count);
                std::memcpy(values.data(), ranks[first.root][i]->send, count * sizeof(float));
                for (const auto& mine : ranks) std::memcpy(mine[i]->recv, values.data(), count * sizeof(float));
                continue;
            }
            std::vector<float> sum(count);
            std::memcpy(sum.data(), ranks[0][i]->send, count * sizeof(float));
            for (std::size_t r = 1; r < ranks.size(); r++) {
                const float* part = static_cast<const float*>(ranks[r][i]->send);
                for (std::size_t k = 0; k < count; k++) sum[k] += part[k];
            }
            if (first.op == ncclAvg) {
                const float scale = 1.0f / static_cast<float>(ranks.size());
                for (float& v : sum) v *= scale;
            }
            for (const auto& mine : ranks) std::memcpy(mine[i]->recv, sum.data(), count * sizeof(float));
        }
    }
    return ncclSuccess;
}

ncclResult_t enqueue(const Op& op) {
    std::lock_guard lock(api_mutex());
    if (ncclResult_t r = check(op); r != ncclSuccess) return r;
    auto& group = groups()[std::this_thread::get_id()];
    if (group.depth == 0) {
        if (op.comm->clique->ranks > 1) {
            return fail(ncclInvalidUsage, "one thread driving several ranks must group their collectives (ncclGroupStart/End); NCCL would hang");
        }
        std::vector<Op> one{op};
        return run(one);
    }
    group.ops.push_back(op);
    return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
    if (version == nullptr) return ncclInvalidArgument;
    *version = kVersion;
    return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
    switch (result) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error";
        case ncclSystemError: return "unhandled system error";
        case ncclInternalError: return "internal error";
        case ncclInvalidArgument: return "invalid argument";
        case ncclInvalidUsage: return "invalid usage";
        default: return "unknown result code";
    }
}

ncclResult_t ncclCommInitAll(ncclComm_t* comm, int ndev, const int* devlist) {
    std::lock_guard lock(api_mutex());
    if (comm == nullptr || ndev < 1) return fail(ncclInvalidArgument, "ncclCommInitAll: no communicators asked for");
    for (int i = 0; i < ndev; i++) {
        if (devlist != nullptr && devlist[i] != 0) return fail(ncclInvalidArgument, "ncclCommInitAll: the simulator has one device, ordinal 0");
    }
    auto clique = std::make_shared<Clique>();
    clique->ranks = ndev;
    for (int i = 0; i < ndev; i++) {
        auto c = std::make_unique<ncclComm>();
        c->clique = clique;
        c->rank = i;
        comm[i] = c.get();
        comms()[c.get()] = std::move(c);
    }
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    std::lock_guard lock(api_mutex());
    return comms().erase(comm) == 1 ? ncclSuccess : fail(ncclInvalidArgument, "ncclCommDestroy: invalid communicator");
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
    std::lock_guard lock(api_mutex());
    if (comms().count(comm) == 0 || count == nullptr) return ncclInvalidArgument;
    *count = comm->clique->ranks;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
    std::lock_guard lock(api_mutex());
    if (comms().count(comm) == 0 || rank == nullptr) return ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
    std::lock_guard lock(api_mutex());
    groups()[std::this_thread::get_id()].depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
    std::lock_guard lock(api_mutex());
    auto& group = groups()[std::this_thread::get_id()];
    if (group.depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--group.depth > 0) return ncclSuccess;
    std::vector<Op> ops;
    ops.swap(group.ops);
    return run(ops);
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           void* stream) {
    return enqueue(Op{Kind::AllReduce, sendbuff, recvbuff, count, datatype, op, -1, comm, stream});
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype, int root, ncclComm_t comm,
                           void* stream) {
    return enqueue(Op{Kind::Broadcast, sendbuff, recvbuff, count, datatype, ncclSum, root, comm, stream});
}

}  // extern "C"

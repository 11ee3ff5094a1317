using Mobius.Cuda.Interop;

namespace Mobius.Cuda;

/// <summary>
/// Device time by call: while <see cref="TimeCalls"/> is on, every kernel launch and cuBLAS, cuBLASLt or cuDNN call is
/// bracketed by a pair of CUDA events on the backend's stream, and the time between them is added to the call's name.
/// A call's time is the device's from the moment the stream reaches it to the moment the call's work is done: its own
/// kernels, with nothing of the host's. Events are pooled and read in batches, so timing costs two event records per
/// call and one wait every thousand calls.
/// </summary>
public sealed unsafe partial class CudaBackend
{
    private readonly Dictionary<string, double> _callMs = new();
    private readonly Dictionary<string, long> _callsTimed = new();
    private CallTimer? _callTimer;

    /// <summary>How many calls of each name <see cref="CallMilliseconds"/> holds the time of (cleared with it).</summary>
    internal IReadOnlyDictionary<string, long> CallsTimed
    {
        get
        {
            _callTimer?.Collect();
            return _callsTimed;
        }
    }

    /// <inheritdoc />
    public IDisposable? TimeCalls()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_callTimer is not null)
        {
            throw new InvalidOperationException("the CUDA backend is timing its calls already: dispose the first TimeCalls() scope before starting another.");
        }

        _callTimer = new CallTimer(this);
        return _callTimer;
    }

    /// <inheritdoc />
    public IReadOnlyDictionary<string, double> CallMilliseconds
    {
        get
        {
            _callTimer?.Collect();
            return _callMs;
        }
    }

    /// <summary>
    /// Counts a call by name and, while calls are timed, opens its timing: the call goes inside
    /// <c>using (Call(name)) { ... }</c>, one library call or launch each.
    /// </summary>
    private CallScope Call(string name)
    {
        Count(name);
        _callTimer?.Start(name);
        return new CallScope(_callTimer);
    }

    private readonly ref struct CallScope(CallTimer? timer)
    {
        public void Dispose() => timer?.End();
    }

    private sealed class CallTimer(CudaBackend backend) : IDisposable
    {
        private const int BatchCalls = 1024;
        private readonly Stack<nint> _free = new();
        private readonly List<(string Name, nint Start, nint End)> _pending = new();
        private string? _open;
        private nint _openStart;

        public void Start(string name)
        {
            if (_open is not null)
            {
                throw new InvalidOperationException($"{name} was called inside the timing of {_open}: one library call or launch per Call().");
            }

            _openStart = Record();
            _open = name;
        }

        public void End()
        {
            if (_open is null)
            {
                return;
            }

            _pending.Add((_open, _openStart, Record()));
            _open = null;
            if (_pending.Count >= BatchCalls)
            {
                Collect();
            }
        }

        /// <summary>Waits for the calls timed so far and adds their times to the backend's.</summary>
        public void Collect()
        {
            if (_pending.Count == 0)
            {
                return;
            }

            backend.MakeCurrent();
            foreach (var (name, start, end) in _pending)
            {
                // Each end: calls on the two streams finish in no fixed order.
                Driver.Check(Driver.cuEventSynchronize(end), "cuEventSynchronize");
                Driver.Check(Driver.cuEventElapsedTime(out float ms, start, end), "cuEventElapsedTime");
                System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(backend._callMs, name, out _) += ms;
                System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(backend._callsTimed, name, out _)++;
                _free.Push(start);
                _free.Push(end);
            }

            _pending.Clear();
        }

        /// <summary>Ends the timing (the scope <see cref="TimeCalls"/> returned): reads what is pending, frees the events.</summary>
        public void Dispose()
        {
            if (!ReferenceEquals(backend._callTimer, this))
            {
                return; // ended already
            }

            backend._callTimer = null;
            if (backend._disposed)
            {
                return; // the context and its events are gone with the backend
            }

            Collect();
            backend.MakeCurrent();
            while (_free.Count > 0)
            {
                Driver.cuEventDestroy(_free.Pop());
            }
        }

        private nint Record()
        {
            backend.MakeCurrent();
            if (!_free.TryPop(out nint e))
            {
                Driver.Check(Driver.cuEventCreate(out e, 0), "cuEventCreate");
            }

            Driver.Check(Driver.cuEventRecord(e, backend._lane.Stream), "cuEventRecord");
            return e;
        }
    }
}

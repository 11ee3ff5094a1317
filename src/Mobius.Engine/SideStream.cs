namespace Mobius.Engine;

/// <summary>
/// Work on a backend's second stream beside its main one: fork, hand buffers over, join. The parallel topology runs
/// its inference-only spatial chain so, while the temporal ring, which depends on the chain and not the other way
/// round, runs on the main stream.
/// <list type="bullet">
/// <item><see cref="Fork"/>: the side stream waits for the main stream's work so far (the inputs it reads).</item>
/// <item><see cref="Use"/>: ops issued inside the scope go on the side stream, and their buffers belong to it.</item>
/// <item><see cref="Handoff"/>: the main stream waits for the side stream's work so far, and the allocator learns that
/// the main stream uses the buffer, so that its block is not written again on the side before the main stream's reads.</item>
/// <item><see cref="Share"/>: the same for a buffer of the main stream that the side stream reads.</item>
/// <item><see cref="Dispose"/>: the main stream waits for all of the side stream's work.</item>
/// </list>
/// On a backend with one stream (CPU, meta) or when not enabled, every call does nothing and ops run in the order they
/// are issued, so the same code computes the same values either way.
/// </summary>
public sealed class SideStream : IDisposable
{
    private const int Main = 0;
    private const int Side = 1;
    private readonly IBackend _backend;
    private bool _joined;

    private SideStream(IBackend backend, bool active)
    {
        _backend = backend;
        IsActive = active;
        if (active)
        {
            _backend.CurrentStream = Side;
            try
            {
                _backend.WaitEvent(Record(Main));
            }
            finally
            {
                _backend.CurrentStream = Main;
            }
        }
    }

    /// <summary>
    /// Starts side-stream work on <paramref name="backend"/>: active when <paramref name="enabled"/> and the backend has
    /// a second stream. Call it with the main stream current.
    /// </summary>
    public static SideStream Fork(IBackend backend, bool enabled = true)
    {
        ArgumentNullException.ThrowIfNull(backend);
        bool active = enabled && backend.StreamCount > 1;
        if (active && backend.CurrentStream != Main)
        {
            throw new InvalidOperationException("SideStream.Fork: the main stream must be current.");
        }

        return new SideStream(backend, active);
    }

    /// <summary>True when work runs on the side stream (false: everything runs on the main stream in issue order).</summary>
    public bool IsActive { get; }

    /// <summary>Issues the ops of the scope on the side stream; disposing the scope makes the main stream current again.</summary>
    public Scope Use()
    {
        if (!IsActive)
        {
            return default;
        }

        ObjectDisposedException.ThrowIf(_joined, this);
        _backend.CurrentStream = Side;
        return new Scope(_backend);
    }

    /// <summary>
    /// The main stream waits for the side stream's work so far, which wrote <paramref name="t"/>, and the allocator
    /// learns that the main stream reads it. Call it with the main stream current.
    /// </summary>
    public void Handoff(Tensor t)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (!IsActive)
        {
            return;
        }

        ObjectDisposedException.ThrowIf(_joined, this);
        if (_backend.CurrentStream != Main)
        {
            throw new InvalidOperationException("SideStream.Handoff: call it on the main stream, outside Use().");
        }

        _backend.RecordStream(t, Main);
        _backend.WaitEvent(Record(Side));
    }

    /// <summary>The allocator learns that the side stream reads <paramref name="t"/>, a buffer of the main stream.</summary>
    public void Share(Tensor t)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (IsActive)
        {
            _backend.RecordStream(t, Side);
        }
    }

    /// <summary>Joins: the main stream waits for every op queued on the side stream.</summary>
    public void Dispose()
    {
        if (!IsActive || _joined)
        {
            return;
        }

        _joined = true;
        _backend.CurrentStream = Main;
        _backend.WaitEvent(Record(Side));
    }

    private StreamEvent Record(int stream)
    {
        int current = _backend.CurrentStream;
        _backend.CurrentStream = stream;
        try
        {
            return _backend.RecordEvent();
        }
        finally
        {
            _backend.CurrentStream = current;
        }
    }

    /// <summary>The span of <see cref="Use"/>: ops on the side stream until disposed.</summary>
    public readonly struct Scope(IBackend? backend) : IDisposable
    {
        /// <summary>Makes the main stream current again.</summary>
        public void Dispose()
        {
            if (backend is not null)
            {
                backend.CurrentStream = Main;
            }
        }
    }
}

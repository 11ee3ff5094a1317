namespace Mobius.Engine;

/// <summary>
/// A point in a backend stream's queue (<see cref="IBackend.RecordEvent"/>), spent by the one
/// <see cref="IBackend.WaitEvent"/> that waits for it. On CUDA it holds an event from the backend's pool.
/// </summary>
public readonly record struct StreamEvent(nint Handle)
{
    /// <summary>No event: nothing to wait for.</summary>
    public static StreamEvent None => default;

    /// <summary>True when there is nothing to wait for.</summary>
    public bool IsNone => Handle == 0;
}

namespace Mobius.Model.Training;

/// <summary>
/// An <see cref="IProgress{T}"/> that reports on the calling thread, in order (unlike
/// <see cref="Progress{T}"/>, which posts to the thread pool): progress handlers may throw to cancel.
/// </summary>
public sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    /// <inheritdoc />
    public void Report(T value) => report(value);
}

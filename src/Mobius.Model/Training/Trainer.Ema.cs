using Mobius.Engine;

namespace Mobius.Model.Training;

/// <content>The moving average of the trained weights (<see cref="TrainOptions.EmaDecay"/>).</content>
public sealed partial class Trainer
{
    /// <summary>The EMA decay of 1-based step <paramref name="step"/>: <see cref="TrainOptions.EmaDecay"/>, warmed up as (1 + t) / (10 + t).</summary>
    public static float EmaDecayAt(float decay, int step) => Math.Min(decay, (1f + step) / (10f + step));

    /// <summary>Whether this trainer keeps an EMA of its weights (<see cref="TrainOptions.EmaDecay"/>).</summary>
    public bool HasEma => Options.EmaDecay > 0;

    private void UpdateEma(int step)
    {
        if (!HasEma)
        {
            return;
        }

        float decay = EmaDecayAt(Options.EmaDecay, step);
        foreach (var (p, ema) in _ema)
        {
            _model.Backend.Add(ema, p, ema, decay, 1f - decay);
        }
    }

    /// <summary>
    /// Puts the EMA weights (<see cref="TrainOptions.EmaDecay"/>) in the model until the returned scope is disposed,
    /// which puts the trained weights back: validation and sampling with the average. Without an EMA, or before
    /// the first step, the scope changes nothing. Training steps inside the scope are refused.
    /// </summary>
    public IDisposable EmaWeights()
    {
        if (!HasEma || _emaInPlace)
        {
            return new Restore(null);
        }

        SwapEma();
        _emaInPlace = true;
        return new Restore(() =>
        {
            SwapEma();
            _emaInPlace = false;
        });
    }

    private sealed class Restore(Action? restore) : IDisposable
    {
        private Action? _restore = restore;

        public void Dispose()
        {
            _restore?.Invoke();
            _restore = null;
        }
    }

    private void SwapEma()
    {
        var backend = _model.Backend;
        foreach (var (p, ema) in _ema)
        {
            using var held = Tensor.Empty(backend, p.Shape);
            backend.Scale(p, 1f, held);
            backend.Scale(ema, 1f, p);
            backend.Scale(held, 1f, ema);
        }
    }

    /// <summary>The EMA weights by parameter name (a host copy); null without an EMA.</summary>
    public Dictionary<string, float[]>? EmaSnapshot()
    {
        if (!HasEma)
        {
            return null;
        }

        return _optimizer.Parameters.Where(np => _ema.ContainsKey(np.Parameter))
            .ToDictionary(np => np.Name, np => (_emaInPlace ? np.Parameter : _ema[np.Parameter]).ToArray());
    }
}

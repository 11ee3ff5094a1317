using Mobius.Engine;

namespace Mobius.Model.Training;

/// <content>The loop bridge's gradient correction (<see cref="TrainOptions.LoopCorrectionEvery"/>): exact steps and what they measure.</content>
public sealed partial class Trainer
{
    /// <summary><see cref="LoopCorrectionMode.Scale"/>'s running means for one parameter tensor.</summary>
    internal sealed class LoopScale
    {
        /// <summary>Running mean of &lt;exact, loop&gt;.</summary>
        public double Covariance { get; set; }

        /// <summary>Running mean of &lt;loop, loop&gt;.</summary>
        public double Variance { get; set; }

        /// <summary>The fitted coefficient, clamped to [0, 1] (0 without a variance).</summary>
        public float Coefficient => Variance > 0 ? (float)Math.Clamp(Covariance / Variance, 0, 1) : 0f;
    }

    /// <summary>
    /// What the loop correction (<see cref="TrainOptions.LoopCorrectionEvery"/>) has measured so far, by parameter
    /// name; null when this run has none or has not yet taken an exact step. A copy: training goes on without it.
    /// </summary>
    public LoopCorrectionState? LoopCorrectionState()
    {
        if (!LoopCorrected || _loopBiasFolds == 0)
        {
            return null;
        }

        var fits = _optimizer.Parameters.Where(np => _loopScale.ContainsKey(np.Parameter))
            .ToDictionary(np => np.Name, np => new LoopScaleFit(_loopScale[np.Parameter].Covariance, _loopScale[np.Parameter].Variance));
        var bias = _optimizer.Parameters.Where(np => _loopBias.ContainsKey(np.Parameter))
            .ToDictionary(np => np.Name, np => _loopBias[np.Parameter].ToArray());
        return new LoopCorrectionState(Options.LoopCorrectionMode, _loopBiasFolds, fits, bias);
    }

    private void ClearLoopCorrection()
    {
        foreach (var t in _loopBias.Values)
        {
            t.Dispose();
        }

        _loopBias.Clear();
        _loopScale.Clear();
        _loopBiasFolds = 0;
    }

    /// <summary>
    /// The running loop-minus-exact gradient difference by parameter (<see cref="TrainOptions.LoopCorrectionEvery"/>),
    /// an exponential mean from zero: times <see cref="LoopBiasScale"/> it is the debiased mean the steps subtract. For tests.
    /// </summary>
    internal IReadOnlyDictionary<Parameter, Tensor> LoopBias => _loopBias;

    /// <summary><see cref="LoopCorrectionMode.Scale"/>'s fitted coefficients by parameter. For tests.</summary>
    internal IReadOnlyDictionary<Parameter, LoopScale> LoopScales => _loopScale;

    /// <summary>
    /// <see cref="LoopCorrectionMode.Scale"/>'s fitted coefficients by parameter name (empty in other modes and
    /// before the first exact step): how far the loop's gradient is trusted, tensor by tensor.
    /// </summary>
    public IReadOnlyDictionary<string, float> LoopCoefficients() =>
        _optimizer.Parameters.Where(np => _loopScale.ContainsKey(np.Parameter)).ToDictionary(np => np.Name, np => _loopScale[np.Parameter].Coefficient);

    /// <summary>1 / (1 - momentum^folds): what turns <see cref="LoopBias"/> into an unbiased mean (as Adam debiases its moments).</summary>
    internal float LoopBiasScale => _loopBiasFolds == 0 ? 0f : 1f / (1f - MathF.Pow(Options.LoopCorrectionMomentum, _loopBiasFolds));

    /// <summary>Whether this run corrects the loop bridge's gradient (<see cref="TrainOptions.LoopCorrectionEvery"/>).</summary>
    private bool LoopCorrected => Options.LoopCorrectionEvery > 0 && Stage == Stage.TextToVideo && _model.Unet.IsLoop;

    /// <summary>
    /// Between exact steps (<see cref="TrainOptions.LoopCorrectionEvery"/>): corrects the loop's gradient in the
    /// parameters by what the exact steps so far have measured; nothing before the first exact step.
    /// </summary>
    internal void CorrectLoopGradients()
    {
        var backend = _model.Backend;
        float scale = LoopBiasScale;
        foreach (var (_, p) in _optimizer.Parameters)
        {
            if (p.Grad is not { } g)
            {
                continue;
            }

            if (_loopBias.TryGetValue(p, out var bias))
            {
                backend.Add(g, bias, g, 1f, -scale);
            }
            else if (_loopScale.TryGetValue(p, out var fit))
            {
                backend.Scale(g, fit.Coefficient, g);
            }
        }
    }

    /// <summary>
    /// With the loop's gradient in the parameters: computes serial's exact one on the same batch (every level
    /// exact, spatial layers recomputed), folds the pair into the correction (<see cref="TrainOptions.LoopCorrectionMode"/>),
    /// and leaves the exact gradient in the parameters for the optimizer.
    /// </summary>
    private void ExactStepAndFoldBias(Batch batch)
    {
        var backend = _model.Backend;
        var unet = _model.Unet;
        var loopGrads = new Dictionary<Parameter, Tensor>();
        try
        {
            bool scale = Options.LoopCorrectionMode == LoopCorrectionMode.Scale;
            foreach (var (_, p) in _optimizer.Parameters)
            {
                if (p.Grad is { } g)
                {
                    // The scale mode needs only dot products: a sample of a large tensor will do.
                    loopGrads[p] = scale ? Sample(g) : Copy(g);
                }

                p.ClearGrad();
            }

            (int levels, bool recompute) = (unet.LoopExactLevels, unet.RecomputeSpatial);
            unet.LoopExactLevels = -1;
            unet.RecomputeSpatial = true;
            try
            {
                Backprop(batch);
            }
            finally
            {
                (unet.LoopExactLevels, unet.RecomputeSpatial) = (levels, recompute);
            }

            float m = Options.LoopCorrectionMomentum;
            if (scale)
            {
                // Running means from zero; their ratio needs no debiasing.
                using var sum = Tensor.Zeros(backend, new Shape(1));
                foreach (var (p, loopGrad) in loopGrads)
                {
                    if (p.Grad is not { } exact)
                    {
                        continue;
                    }

                    var fit = _loopScale.TryGetValue(p, out var known) ? known : _loopScale[p] = new LoopScale();
                    using var exactSample = loopGrad.Numel == exact.Numel ? null : Sample(exact);
                    backend.Fill(sum, 0f);
                    backend.SumSquaresAccumulate(loopGrad, sum);
                    double variance = sum.Item();
                    backend.Mul(loopGrad, exactSample ?? exact, loopGrad);
                    backend.Sum(loopGrad, sum);
                    fit.Covariance = m * fit.Covariance + (1 - m) * sum.Item();
                    fit.Variance = m * fit.Variance + (1 - m) * variance;
                }

                _loopBiasFolds++;
                return;
            }

            // An exponential mean from zero, debiased where it is used (LoopBiasScale), so the first differences
            // count alike instead of the first one lasting for 1 / (1 - momentum) folds.
            foreach (var (p, loopGrad) in loopGrads)
            {
                if (p.Grad is not { } exact)
                {
                    continue;
                }

                if (!_loopBias.TryGetValue(p, out var bias))
                {
                    bias = Tensor.Zeros(backend, exact.Shape, MemoryCategory.OptimizerState);
                    _loopBias[p] = bias;
                }

                backend.Add(loopGrad, exact, loopGrad, 1f, -1f);
                backend.Add(bias, loopGrad, bias, m, 1f - m);
            }

            _loopBiasFolds++;
        }
        finally
        {
            foreach (var t in loopGrads.Values)
            {
                t.Dispose();
            }
        }
    }

    /// <summary>A whole copy of <paramref name="g"/>.</summary>
    private Tensor Copy(Tensor g)
    {
        var copy = Tensor.Empty(_model.Backend, g.Shape);
        _model.Backend.Scale(g, 1f, copy);
        return copy;
    }

    /// <summary>
    /// Every k-th element of <paramref name="g"/>, k = ceil(n / <see cref="TrainOptions.LoopScaleSamples"/>): a
    /// whole copy up to that size. The same elements for the same shape, so two samples pair up.
    /// </summary>
    private Tensor Sample(Tensor g)
    {
        long n = g.Numel;
        long stride = (n + Options.LoopScaleSamples - 1) / Options.LoopScaleSamples;
        if (stride <= 1)
        {
            return Copy(g);
        }

        int count = checked((int)((n + stride - 1) / stride));
        var sample = Tensor.Empty(_model.Backend, new Shape(count));
        _model.Backend.CopyRows(g, 0, stride, sample, 0, 1, count, 1);
        return sample;
    }
}

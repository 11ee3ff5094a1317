using System.Globalization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Diffusion;
using Mobius.Model.Training;

namespace Mobius.Benchmarks;

/// <summary>
/// `Mobius.Benchmarks settings [--checkpoint FILE] [--motion move-right] [--steps 600] [--lr 1e-3]
/// [--topology serial] [--bridge loop] [--frame-noise 0.9] [--min-snr 0] [--samples 16] [--freeze down.2.,mid.] [--exact-levels MASK] [--norms 1] [--guidance 4] [--sample-frame-noise R]
/// [--loop-jacobians N] [--loop-jacobians-every 250] [--seed 1] [--loop-correction K]`: what one stage-2 training setting
/// does to a model, measured two ways. It fine-tunes the temporal layers on clips of one motion from a
/// text-to-image checkpoint, then prints (1) the plain noise MSE on fixed held-out batches at six fixed
/// timesteps, so that a loss weighting cannot hide where it helps or hurts, and (2) the motion metric of
/// DDIM samples (guidance 4, 25 steps) of held-out captions: how well the movement matches the caption,
/// how consistent the frames are, and their geometric mean. --steps 0 measures the starting point.
/// Losses at different --frame-noise values are over different noise and do not compare; the sample
/// scores do. --freeze keeps the temporal layers whose names start with one of the given prefixes at their
/// initialisation (the identity): only the others train. --exact-levels (parallel, loop bridge) keeps the
/// spatial layers of the resolution levels in the bit mask on the tape (a diagnostic, see
/// <c>UNet3D.LoopExactLevels</c>). --bridge picks the parallel topology's bridge; --norms 1 prints the RMS of
/// every trained tensor after training (how far the zero-initialised outputs moved); --guidance sets the
/// samples' classifier-free guidance scale and --sample-frame-noise the correlation of their starting noise
/// across frames (default: <see cref="TextToVideo.SampleFrameNoise"/>'s; runs before 2026-11-27 sampled at the
/// training --frame-noise, which --sample-frame-noise R reproduces). --loop-jacobians N (parallel, loop bridge; experimental)
/// passes the loop's gradient through the spatial transformers' mean-field Jacobians (<c>UNet3D.BeginLoopJacobians</c>),
/// measured on N batches before the first step and again every --loop-jacobians-every steps. --seed sets the temporal
/// layers' initialisation and the training batches (the held-out batches and the samples' noise stay fixed).
/// --loop-correction K (loop bridge) takes serial's exact step every K steps, as `mobius compare --loop-correction` does.
/// </summary>
public static class Settings
{
    private static readonly int[] Timesteps = [20, 100, 250, 500, 750, 950];

    private const string Usage = "Mobius.Benchmarks settings [--checkpoint FILE] [--motion move-right] [--steps 600] [--lr 1e-3] [--topology serial] [--bridge loop] " +
        "[--frame-noise 0.9] [--min-snr 0] [--samples 16] [--freeze down.2.,mid.] [--exact-levels MASK] [--norms 1] [--guidance 4] [--sample-frame-noise R] [--loop-jacobians N] [--loop-jacobians-every 250] [--seed 1] [--loop-correction K]";

    public static int Run(string[] args)
    {
        if (CommandArgs.Check(args, Usage, ["--checkpoint", "--motion", "--steps", "--lr", "--topology", "--bridge", "--frame-noise", "--min-snr", "--samples",
            "--freeze", "--exact-levels", "--norms", "--guidance", "--sample-frame-noise", "--loop-jacobians", "--loop-jacobians-every", "--seed", "--loop-correction"]) is { } code)
        {
            return code;
        }

        string Arg(string name, string fallback) => CommandArgs.Get(args, name, fallback);
        float F(string name, string fallback) => float.Parse(Arg(name, fallback), CultureInfo.InvariantCulture);
        string path = Arg("--checkpoint", Path.Combine("models", "tiny-t2i.safetensors"));
        if (!File.Exists(path))
        {
            Console.Error.WriteLine($"no checkpoint at {path}; pass --checkpoint FILE (a text-to-image checkpoint).");
            return 3;
        }

        var motion = Enum.Parse<Motion>(Arg("--motion", "move-right").Replace("-", ""), ignoreCase: true);
        int steps = int.Parse(Arg("--steps", "600"), CultureInfo.InvariantCulture);
        int samples = int.Parse(Arg("--samples", "16"), CultureInfo.InvariantCulture);
        var topology = Enum.Parse<Topology>(Arg("--topology", "serial"), ignoreCase: true);
        float lr = F("--lr", "1e-3"), rho = F("--frame-noise", ModelConfig.DefaultFrameNoiseCorrelation.ToString(CultureInfo.InvariantCulture));
        float gamma = F("--min-snr", TrainOptions.DefaultMinSnrGamma.ToString(CultureInfo.InvariantCulture));
        float guidance = F("--guidance", "4");
        float? sampleNoise = args.Contains("--sample-frame-noise") ? F("--sample-frame-noise", "0") : null;

        using var backend = new CpuBackend();
        var checkpoint = Checkpoint.Load(path);
        string? bridge = Arg("--bridge", "") is { Length: > 0 } b ? b : null;
        int seed = int.Parse(Arg("--seed", "1"), CultureInfo.InvariantCulture);
        using var model = TextToVideo.Load(backend, checkpoint, topology, seed, bridge, frameNoiseCorrelation: rho);
        var config = model.Config;
        model.Unet.LoopExactLevels = int.Parse(Arg("--exact-levels", "0"), CultureInfo.InvariantCulture);
        if (model.Unet.LoopExactLevels != 0)
        {
            Console.WriteLine($"loop bridge with the spatial layers of level mask {model.Unet.LoopExactLevels} exact (a diagnostic)");
        }

        Console.WriteLine($"{topology}, {steps} steps at lr {lr:g3} on {motion}; frame noise {rho:g3}, min-SNR gamma {gamma:g3}; {backend.DeviceName}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var frozenPrefixes = Arg("--freeze", "").Split(',', StringSplitOptions.RemoveEmptyEntries);

        if (steps > 0)
        {
            using var trainer = new Trainer(model, Comparison.Data(config, 1, Split.Train, [motion]), Stage.TextToVideo,
                new TrainOptions { Seed = seed, LearningRate = lr, MinSnrGamma = gamma, FrozenTemporal = frozenPrefixes,
                    LoopCorrectionEvery = int.Parse(Arg("--loop-correction", "0"), CultureInfo.InvariantCulture) });
            Console.WriteLine($"trainable parameters: {trainer.TrainableParameters:N0}{(frozenPrefixes.Length > 0 ? $" (frozen: {string.Join(", ", frozenPrefixes)})" : "")}");
            int jacobianBatches = int.Parse(Arg("--loop-jacobians", "0"), CultureInfo.InvariantCulture);
            int jacobianEvery = int.Parse(Arg("--loop-jacobians-every", "250"), CultureInfo.InvariantCulture);
            if (jacobianBatches < 0 || jacobianEvery < 1 || (jacobianBatches > 0 && !model.Unet.IsLoop))
            {
                Console.Error.WriteLine("--loop-jacobians N (N >= 0) needs the parallel topology's loop bridge, and --loop-jacobians-every at least 1.");
                return 2;
            }

            if (jacobianBatches > 0)
            {
                Console.WriteLine($"loop bridge through the spatial transformers' mean-field Jacobians, measured on {jacobianBatches} batches every {jacobianEvery} steps (experimental)");
            }

            var calibrationData = Comparison.Data(config, 1, Split.Train, [motion]);
            for (int i = 1; i <= steps; i++)
            {
                if (jacobianBatches > 0 && (i - 1) % jacobianEvery == 0)
                {
                    model.Unet.BeginLoopJacobians(LoopBypass.Transformers, 17 + i, imageMean: true);
                    for (int cb = 0; cb < jacobianBatches; cb++)
                    {
                        var batch = trainer.MakeBatch(calibrationData, 5000 + i + cb, 11, captionDropout: 0);
                        using var tape = Tape.Begin();
                        using var x = Tensor.FromArray(backend, batch.NoisyLatents, batch.Shape);
                        using var context = model.EncodeText(batch.Captions, batch.Frames);
                        using var eps = model.Unet.Forward(x, batch.Timesteps, context, batch.Frames);
                    }

                    model.Unet.EndLoopJacobians();
                }

                var s = trainer.TrainStep();
                if (i % 100 == 0 || i == steps)
                {
                    Console.Error.WriteLine($"  step {i}/{steps}, loss {s.Loss:0.0000}, {clock.Elapsed.TotalSeconds:0} s");
                }
            }

            if (Arg("--norms", "") == "1")
            {
                // RMS of each trainable tensor: how far training moved what started at zero.
                foreach (var (name, p) in model.Unet.TemporalParameters().Where(np => !np.Parameter.Frozen))
                {
                    var v = p.ToArray();
                    Console.WriteLine($"  {name,-48} rms {Math.Sqrt(v.Sum(x => (double)x * x) / v.Length):0.00000}");
                }
            }
        }

        var validation = Comparison.Data(config, 1, Split.Validation, [motion]);
        Console.WriteLine("| t | " + string.Join(" | ", Timesteps) + " |");
        Console.WriteLine("|---|" + string.Concat(Timesteps.Select(_ => "---:|")));
        Console.WriteLine("| noise MSE | " + string.Join(" | ", Timesteps.Select(t => LossAt(model, validation, t).ToString("0.0000", CultureInfo.InvariantCulture))) + " |");

        double match = 0, consistency = 0, combined = 0;
        var prompts = Enumerable.Range(0, samples).Select(i => validation.Get(i * 7 % validation.Count).Caption).ToList();
        int per = config.Frames * 3 * config.Height * config.Width;
        for (int start = 0; start < samples; start += 8)
        {
            var chunk = prompts.Skip(start).Take(8).ToList();
            var pixels = model.Generate(chunk, 25, guidance, seed: 3 + start / 8, frameNoise: sampleNoise);
            for (int p = 0; p < chunk.Count; p++)
            {
                var clip = new Clip(pixels.AsSpan(p * per, per).ToArray(), config.Frames, config.Height, config.Width, chunk[p]);
                var score = MotionMetric.ScoreAll(clip)[motion];
                match += score.Motion;
                consistency += score.Consistency;
                combined += score.Combined;
            }
        }

        Console.WriteLine($"samples: {samples}, movement matches caption {match / samples:0.000}, frame consistency {consistency / samples:0.000}, combined {combined / samples:0.000} ({clock.Elapsed.TotalSeconds:0} s)");
        return 0;
    }

    /// <summary>The plain noise MSE at timestep t over 6 fixed batches of 2 held-out clips (the same for every model).</summary>
    private static double LossAt(TextToVideo model, IClipSource data, int t)
    {
        var config = model.Config;
        int frames = config.Frames, imageSize = config.LatentChannels * config.LatentHeight * config.LatentWidth, items = 2;
        var rng = new Random(11);
        double total = 0;
        using var noGrad = Tape.NoGrad();
        for (int batch = 0; batch < 6; batch++)
        {
            var latents = new float[items * frames * imageSize];
            var captions = new string[items];
            for (int i = 0; i < items; i++)
            {
                var clip = data.Get(rng.Next(data.Count));
                Array.Copy(model.Codec.Encode(clip), 0, latents, i * frames * imageSize, frames * imageSize);
                captions[i] = clip.Caption;
            }

            var noise = NoiseSchedule.ClipNoise(rng, items, frames, imageSize, config.FrameNoiseCorrelation);
            var timesteps = Enumerable.Repeat(t, items * frames).ToArray();
            var shape = new Shape(items * frames, config.LatentChannels, config.LatentHeight, config.LatentWidth);
            using var x = Tensor.FromArray(model.Backend, model.Schedule.AddNoise(latents, noise, timesteps, imageSize), shape);
            using var target = Tensor.FromArray(model.Backend, noise, shape);
            using var context = model.EncodeText(captions, frames);
            using var eps = model.Unet.Forward(x, timesteps, context, frames);
            using var loss = Ops.MseLoss(eps, target);
            total += loss.Item();
        }

        return total / 6;
    }
}

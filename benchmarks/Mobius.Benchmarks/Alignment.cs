using System.Globalization;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Benchmarks;

/// <summary>
/// `Mobius.Benchmarks alignment [--checkpoint FILE] [--batches N] [--scale S] [--timestep T] [--calibration N]`: how close the loop bridge's
/// straight-through gradient is to serial's exact one, layer by layer. Both models hold the same weights
/// (the checkpoint's spatial part, temporal outputs drawn at +-S so every temporal layer matters) and see
/// the same training batches; the table gives, per temporal layer, the cosine between the two gradients
/// (averaged over its parameter tensors and the batches) and the norm ratio loop / serial. A bridge that
/// changes how gradients cross the spatial chain is measured here. Two more columns put one kind of
/// spatial layer back on the tape (exact, with its activations) to show which kind's bypass costs the most
/// alignment; the next ones put every spatial layer of some resolution levels back, and the last row gives
/// each variant's saved bytes, so the price of that alignment is on the same page. Three columns pass the loop's
/// gradient through measured linearisations of the bypassed layers instead (experimental, <see cref="LoopJacobian"/>),
/// measured on --calibration batches of their own: the spatial transformers' per-pixel mean Jacobians, their
/// mean-field ones (per pixel and image mean), and mean-field ones for every spatial layer. With --timestep every batch is re-noised at that one diffusion step (same clips, same
/// noise), to see where along the noise schedule the estimate departs.
/// </summary>
public static class Alignment
{
    private const string Usage = "Mobius.Benchmarks alignment [--checkpoint FILE] [--batches 3] [--scale 0.02] [--timestep T] [--calibration 16]";

    public static int Run(string[] args)
    {
        if (CommandArgs.Check(args, Usage, ["--checkpoint", "--batches", "--scale", "--timestep", "--calibration"]) is { } code)
        {
            return code;
        }

        string Arg(string name, string fallback) => CommandArgs.Get(args, name, fallback);
        string path = Arg("--checkpoint", Path.Combine("models", "tiny-t2i.safetensors"));
        int batches = int.Parse(Arg("--batches", "3"), CultureInfo.InvariantCulture);
        float scale = float.Parse(Arg("--scale", "0.02"), CultureInfo.InvariantCulture);
        int calibration = int.Parse(Arg("--calibration", "16"), CultureInfo.InvariantCulture);
        int? timestep = Arg("--timestep", "") is { Length: > 0 } t ? int.Parse(t, CultureInfo.InvariantCulture) : null;
        if (!File.Exists(path))
        {
            Console.Error.WriteLine($"no checkpoint at {path}; pass --checkpoint FILE (a text-to-image checkpoint).");
            return 3;
        }

        using var backend = new CpuBackend();
        var checkpoint = Checkpoint.Load(path);
        using var serial = TextToVideo.Load(backend, checkpoint, Topology.Serial, 1);
        using var loop = TextToVideo.Load(backend, checkpoint, Topology.Parallel, 1, "loop");
        var rng = new Random(5);
        var temporal = serial.Unet.TemporalParameters().ToDictionary(np => np.Name,
            np => np.Parameter.ToArray().Select(v => v == 0 ? (float)(rng.NextDouble() * 2 - 1) * scale : v).ToArray());
        serial.Unet.LoadStateDict(temporal, strict: false);
        loop.Unet.LoadStateDict(temporal, strict: false);

        var data = Comparison.Data(checkpoint.Config, 1, Mobius.Data.Split.Train);

        // One trainer, for its batches (the same for both models: same config, codec and schedule); it freezes serial.
        using var sampler = new Trainer(serial, data, Stage.TextToVideo, new TrainOptions { Seed = 1 });
        loop.FreezeForVideo();
        var order = serial.Unet.TemporalParameters().Select(np => Layer(np.Name)).Distinct().ToList();
        int levels = checkpoint.Config.Channels.Length;
        var variants = new List<(string Label, LoopBypass Bypass, int ExactLevels, string? Jacobians)>
        {
            ("loop", LoopBypass.All, 0, null),
            ("transformers exact", LoopBypass.ResBlocks, 0, null),
            ("ResBlocks exact", LoopBypass.Transformers, 0, null),
            ("transformers' pixel Jacobians", LoopBypass.All, 0, "pixel"),
            ("transformers' mean-field Jacobians", LoopBypass.All, 0, "field"),
            ("all mean-field Jacobians", LoopBypass.All, 0, "all"),
        };
        for (int mask = 1; mask < (1 << levels) - 1; mask++)
        {
            variants.Add(($"levels {string.Join("+", Enumerable.Range(0, levels).Where(l => ((mask >> l) & 1) != 0))} exact", LoopBypass.All, mask, null));
        }

        // The loop's measured Jacobians (experimental, UNet3D.BeginLoopJacobians), on batches of their own: per pixel
        // only, and mean-field (per pixel and image mean) for every bypassed layer.
        List<(LoopJacobian? Res, LoopJacobian? Attn)> Measure(LoopBypass kinds, bool imageMean)
        {
            loop.Unet.BeginLoopJacobians(kinds, 17, imageMean);
            for (int b = 0; b < calibration; b++)
            {
                Gradients(loop, sampler.MakeBatch(data, 1000 + b, 11, captionDropout: 0));
            }

            loop.Unet.EndLoopJacobians();
            var measured = loop.Unet.Blocks.Select(bl => (bl.ResJacobian, bl.AttnJacobian)).ToList();
            foreach (var bl in loop.Unet.Blocks)
            {
                bl.ResJacobian = bl.AttnJacobian = null; // held here, handed back per variant
            }

            return measured;
        }

        var pixel = Measure(LoopBypass.Transformers, false);
        var field = Measure(LoopBypass.All, true);
        void UseJacobians(string? which)
        {
            foreach (var (bl, i) in loop.Unet.Blocks.Select((bl, i) => (bl, i)))
            {
                bl.ResJacobian = which == "all" ? field[i].Res : null;
                bl.AttnJacobian = which switch { "pixel" => pixel[i].Attn, "field" or "all" => field[i].Attn, _ => null };
            }
        }

        var cos = variants.ToDictionary(v => v.Label, _ => order.ToDictionary(l => l, _ => new List<double>()));
        var saved = variants.ToDictionary(v => v.Label, _ => 0L);
        var ratio = order.ToDictionary(l => l, _ => new List<double>());
        long serialSaved = 0;
        for (int b = 0; b < batches; b++)
        {
            var batch = sampler.MakeBatch(data, b + 1, 11, captionDropout: 0);
            if (timestep is { } fixedStep)
            {
                batch = AtTimestep(batch, serial.Schedule, fixedStep);
            }

            (var exact, serialSaved) = Gradients(serial, batch);
            foreach (var (label, bypass, exactLevels, jacobians) in variants)
            {
                UseJacobians(jacobians);
                loop.Unet.LoopBypass = bypass;
                loop.Unet.LoopExactLevels = exactLevels;
                (var straight, saved[label]) = Gradients(loop, batch);
                foreach (var (name, g) in exact)
                {
                    var (dot, na, nb) = Dot(g, straight[name]);
                    cos[label][Layer(name)].Add(dot / Math.Sqrt(na * nb + 1e-300));
                    if (label == "loop")
                    {
                        ratio[Layer(name)].Add(Math.Sqrt(nb / (na + 1e-300)));
                    }
                }
            }

            Console.Error.WriteLine($"batch {b + 1}/{batches}");
        }

        Console.WriteLine($"Loop vs serial gradients: {Path.GetFileName(path)}, temporal outputs +-{scale}, {batches} batches{(timestep is null ? "" : $" at timestep {timestep}")}, {DateTime.UtcNow:yyyy-MM-dd}");
        Console.WriteLine("(cosine per temporal layer, averaged over its parameter tensors and the batches)");
        Console.WriteLine();
        var others = variants.Skip(1).Select(v => v.Label).ToList();
        Console.WriteLine($"| temporal layer | loop: cosine | loop: norm / serial's | {string.Join(" | ", others.Select(o => $"cosine, {o}"))} |");
        Console.WriteLine($"|---|---:|---:|{string.Concat(others.Select(_ => "---:|"))}");
        foreach (var layer in order)
        {
            Console.WriteLine($"| {layer} | {cos["loop"][layer].Average():F3} | {ratio[layer].Average():F2} | "
                + $"{string.Join(" | ", others.Select(o => cos[o][layer].Average().ToString("F3", CultureInfo.InvariantCulture)))} |");
        }

        UseJacobians(null);
        foreach (var j in pixel.Concat(field).SelectMany(p => new[] { p.Res, p.Attn }))
        {
            j?.Dispose();
        }

        Console.WriteLine($"| saved for backward, MiB (serial {serialSaved / 1048576.0:F1}) | {saved["loop"] / 1048576.0:F1} | | "
            + $"{string.Join(" | ", others.Select(o => (saved[o] / 1048576.0).ToString("F1", CultureInfo.InvariantCulture)))} |");
        return 0;
    }

    /// <summary>The batch's clips and noise at diffusion step <paramref name="t"/> instead of their own steps.</summary>
    private static Trainer.Batch AtTimestep(Trainer.Batch batch, Mobius.Model.Diffusion.NoiseSchedule schedule, int t)
    {
        int images = batch.Shape[0], size = (int)(batch.Shape.Numel / images);
        var clean = new float[batch.NoisyLatents.Length];
        for (int i = 0; i < images; i++)
        {
            double ab = schedule.AlphasCumprod[batch.Timesteps[i]];
            float a = (float)Math.Sqrt(ab), s = (float)Math.Sqrt(1 - ab);
            for (int j = i * size; j < (i + 1) * size; j++)
            {
                clean[j] = (batch.NoisyLatents[j] - s * batch.Noise[j]) / a;
            }
        }

        var steps = Enumerable.Repeat(t, images).ToArray();
        return batch with { NoisyLatents = schedule.AddNoise(clean, batch.Noise, steps, size), Timesteps = steps };
    }

    private static string Layer(string name) => string.Join('.', name.Split('.').Take(3));

    private static (Dictionary<string, float[]> Gradients, long SavedBytes) Gradients(TextToVideo model, Trainer.Batch batch)
    {
        long savedBytes;
        var backend = model.Backend;
        using var tape = Tape.Begin();
        using var x = Tensor.FromArray(backend, batch.NoisyLatents, batch.Shape);
        using var target = Tensor.FromArray(backend, batch.Noise, batch.Shape);
        Tensor context;
        using (Tape.NoGrad())
        {
            context = model.EncodeText(batch.Captions, batch.Frames);
        }

        using (context)
        using (var eps = model.Unet.Forward(x, batch.Timesteps, context, batch.Frames))
        using (var loss = Ops.MseLoss(eps, target))
        {
            savedBytes = tape.SavedBytes;
            loss.Backward();
        }

        var grads = model.Unet.TemporalParameters().ToDictionary(np => np.Name, np => np.Parameter.Grad!.ToArray());
        foreach (var (_, p) in model.Unet.TemporalParameters())
        {
            p.ClearGrad();
        }

        return (grads, savedBytes);
    }

    private static (double Dot, double NormA, double NormB) Dot(float[] a, float[] b)
    {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            ab += (double)a[i] * b[i];
            aa += (double)a[i] * a[i];
            bb += (double)b[i] * b[i];
        }

        return (ab, aa, bb);
    }
}

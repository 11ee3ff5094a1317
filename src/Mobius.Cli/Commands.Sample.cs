using System.CommandLine;
using System.Globalization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;
using Spectre.Console;

namespace Mobius.Cli;

/// <content><c>mobius sample</c>.</content>
public static partial class Commands
{
    // ---- sample -----------------------------------------------------------------------------------

    private static Command Sample()
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "a checkpoint (default: the text-to-video model that ships; stage-1 checkpoints give still images)" };
        var prompt = new Option<string[]>("--prompt") { Description = "what to draw, e.g. \"a red heart moving left\" (give it again for more prompts)", Required = true };
        var count = new Option<int>("--count") { Description = "clips per prompt, each from its own noise", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "GIF to write (several clips: a grid, their captions in a .txt beside it and their frames in OUT-frames.png)", DefaultValueFactory = _ => "clip.gif" };
        var steps = new Option<int>("--steps") { Description = "DDIM steps", DefaultValueFactory = _ => 25 };
        var trained = new Option<bool>("--no-ema") { Description = "draw with the trained weights even when the checkpoint keeps their moving average (--ema)" };
        var cmd = new Command("sample", "Generate clips for prompts with DDIM and classifier-free guidance, written as an animated GIF (a grid for several), each scored for the motion its prompt names.")
            { checkpoint, prompt, count, output, steps, GuidanceOption, SampleFrameNoiseOption, trained, FrozenWeightsOption, BackendOption, MathOption, SeedOption, ThreadsOption };
        cmd.SetAction(p =>
        {
            float? startNoise = SampleFrameNoise(p);
            float guidance = Guidance(p);
            var storage = FrozenWeights(p);
            int ddim = p.GetValue(steps);
            if (ddim is < 1 or > 1000)
            {
                throw new UsageException($"--steps must be 1..1000, got {ddim}.");
            }

            int perPrompt = p.GetValue(count);
            if (perPrompt is < 1 or > 64)
            {
                throw new UsageException($"--count must be 1..64 clips per prompt, got {perPrompt}.");
            }

            var texts = p.GetValue(prompt)!;
            if (texts.FirstOrDefault(t => Tokenizer.SplitWords(t).Length == 0) is not null)
            {
                throw new UsageException("--prompt is empty; give a caption, e.g. \"a red heart moving left\" (--guidance 0 draws the model's unconditional clips).");
            }

            string path = p.GetValue(output)!;
            if (!string.Equals(Path.GetExtension(path), ".gif", StringComparison.OrdinalIgnoreCase))
            {
                throw new UsageException($"--out {path}: samples are written as animated GIFs; give a file name ending in .gif.");
            }

            CheckWritable(path, "a GIF file name");
            string? given = p.GetValue(checkpoint);
            using var backend = Backends.Create(p.GetValue(BackendOption)!, p.GetValue(ThreadsOption), 0, p.GetValue(MathOption));
            var ckpt = Checkpoint.Load(given ?? (File.Exists(DefaultVideoCheckpoint) ? DefaultVideoCheckpoint : DefaultCheckpoint));
            if (ckpt.Ema is not null && !p.GetValue(trained))
            {
                ckpt = ckpt.WithEma();
                AnsiConsole.MarkupLine(Markup.Escape($"with the weights' moving average the checkpoint keeps (EMA decay {ckpt.TrainOptions?.EmaDecay.ToString(CultureInfo.InvariantCulture) ?? "?"}; --no-ema: the trained weights)"));
            }
            using var model = TextToVideo.Load(backend, ckpt, ckpt.Topology, p.GetValue(SeedOption));
            if (storage != DType.Float32)
            {
                // Sampling trains nothing: every weight is frozen, and the linear, convolution and embedding ones can be bf16.
                model.Unet.Freeze();
                model.Text.Freeze();
                model.Unet.StoreFrozenWeights(storage);
                model.Text.StoreFrozenWeights(storage);
            }

            foreach (string text in texts)
            {
                model.Tokenizer.Encode(text, strict: true);
            }

            var captions = texts.SelectMany(t => Enumerable.Repeat(t, perPrompt)).ToList();
            float[] pixels = null!;
            AnsiConsole.Progress().Start(ctx =>
            {
                var task = ctx.AddTask(captions.Count == 1 ? "sampling" : $"sampling {captions.Count} clips", maxValue: ddim);
                pixels = model.Generate(captions, ddim, guidance, p.GetValue(SeedOption), new InlineProgress<int>(d => task.Value = d), startNoise);
            });
            var config = ckpt.Config;
            int frames = ckpt.Topology == Topology.Spatial ? 1 : config.Frames;
            int clipSize = frames * 3 * config.Height * config.Width;
            var clips = captions.Select((c, k) => new Clip(pixels[(k * clipSize)..((k + 1) * clipSize)], frames, config.Height, config.Width, c)).ToList();
            var options = new GifWriteOptions { Upscale = 4 };
            if (clips.Count == 1)
            {
                Gif.Write(path, clips[0], options);
                AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(path)}[/] ({(frames == 1 ? "a still image" : $"{frames} frames")}, {config.Height}x{config.Width}, shown x4)");
            }
            else
            {
                Gif.WriteGrid(path, clips, perPrompt, options);
                string strip = Path.ChangeExtension(path, null) + "-frames.png";
                Filmstrip.Write(strip, clips, upscale: 4);
                AnsiConsole.MarkupLine($"wrote [bold]{Markup.Escape(path)}[/] ({clips.Count} {(frames == 1 ? "still images" : $"clips of {frames} frames")}, {config.Height}x{config.Width}, shown x4: a row per prompt), " +
                    $"captions in [bold]{Markup.Escape(Path.ChangeExtension(path, ".txt"))}[/], frames in [bold]{Markup.Escape(strip)}[/]");
            }

            if (frames > 1)
            {
                // The motion metric of each clip whose prompt names a motion (docs/architecture.md), and their mean.
                AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant($"starting noise correlated {model.SampleFrameNoise(startNoise):0.###} across each clip's frames")));
                var scored = new List<MotionScore>();
                for (int k = 0; k < clips.Count; k++)
                {
                    if (MotionMetric.MotionOf(clips[k]) is { } motion)
                    {
                        var score = MotionMetric.Score(clips[k], motion);
                        scored.Add(score);
                        AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                            $"{(clips.Count > 1 ? $"clip {k + 1}, " : "")}\"{clips[k].Caption}\": motion score {score.Combined:0.000} (movement matches {Kebab(motion)}: {score.Motion:0.000}, frame consistency {score.Consistency:0.000})")));
                    }
                }

                if (scored.Count > 1)
                {
                    AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                        $"mean of {scored.Count} clips: motion score {scored.Average(x => x.Combined):0.000} (movement {scored.Average(x => x.Motion):0.000}, frame consistency {scored.Average(x => x.Consistency):0.000})")));
                }
            }

            return ExitCodes.Success;
        });
        return cmd;
    }
}

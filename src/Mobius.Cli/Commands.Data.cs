using System.CommandLine;
using Mobius.Data;
using Mobius.Model;
using Mobius.Model.Training;
using Spectre.Console;

namespace Mobius.Cli;

/// <content><c>mobius clips</c> and the GIF-folder data the training commands read (<c>--data</c>).</content>
public static partial class Commands
{
    // ---- clips ------------------------------------------------------------------------------------

    private static Command Clips()
    {
        var output = new Option<string>("--out") { Description = "folder to write the GIFs and captions.jsonl into (new, or without a captions.jsonl)", Required = true };
        var count = new Option<int>("--count") { Description = "clips to write", DefaultValueFactory = _ => 100 };
        var upscale = new Option<int>("--upscale") { Description = "write every pixel as an N x N block (the GIFs are read back at the config's size)", DefaultValueFactory = _ => 1 };
        var cmd = new Command("clips", "Writes generated emoji clips as a folder of GIFs with a captions.jsonl: what --data reads, to start a dataset from or to try --data with.")
            { output, count, ConfigOption, MotionOption, SeedOption, upscale };
        cmd.SetAction(p =>
        {
            int n = p.GetValue(count);
            if (n < 1)
            {
                throw new UsageException($"--count must be at least 1 clip, got {n}.");
            }

            if (p.GetValue(upscale) is < 1 or > 16)
            {
                throw new UsageException($"--upscale must be 1 to 16, got {p.GetValue(upscale)}.");
            }

            var config = Configs.Get(p.GetValue(ConfigOption)!);
            var source = new EmojiClips(new EmojiClipsOptions
            {
                Seed = p.GetValue(SeedOption), Frames = config.Frames, Height = config.Height, Width = config.Width, Count = n,
                Motions = ParseMotions(p.GetValue(MotionOption)),
            });
            string folder = p.GetValue(output)!;
            if (File.Exists(Path.Combine(folder, GifFolderClips.CaptionsFileName)))
            {
                throw new UsageException($"{Path.Combine(folder, GifFolderClips.CaptionsFileName)} already exists; write the clips to a new folder.");
            }

            var clips = Enumerable.Range(0, n).Select(source.Get).ToList();
            try
            {
                Ui.Counted("writing GIFs", n, progress => GifFolderClips.Export(folder, clips, new GifWriteOptions { Upscale = p.GetValue(upscale) }, progress), Cancellation);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"cannot write the clips to {folder}: {e.Message}");
            }

            AnsiConsole.MarkupLine($"wrote [bold]{n}[/] clips of {config.Frames} frames, {config.Height}x{config.Width} ({Markup.Escape(config.Name)}), and [bold]{Markup.Escape(Path.Combine(folder, GifFolderClips.CaptionsFileName))}[/]");
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary>
    /// The <c>--data</c> folder at the config's clip size (null without one); <c>--motion</c> selects generated clips
    /// and is refused beside it.
    /// </summary>
    private static GifFolderClips? OpenData(string? folder, ModelConfig config, string? motions)
    {
        RefuseMotionWithData(folder, motions);
        return folder is null ? null : Comparison.OpenFolder(folder, config);
    }

    private static void RefuseMotionWithData(string? folder, string? motions)
    {
        if (folder is not null && motions is not null)
        {
            throw new UsageException("--motion selects generated clips; with --data the folder's GIFs are used as they are.");
        }
    }

    /// <summary>Before any training: the folder's captions against <paramref name="tokenizer"/>, then every GIF read once.</summary>
    private static void CheckData(GifFolderClips data, Tokenizer tokenizer)
    {
        data.CheckCaptions(tokenizer);
        Ui.Counted($"reading the GIFs of {data.Folder}", data.Count, progress => data.Verify(progress), Cancellation);
    }

    /// <summary>Says which clips a run trains on.</summary>
    private static void AnnounceData(GifFolderClips data, bool validates)
    {
        int held = Enumerable.Range(0, data.Count).Count(i => GifFolderClips.IsHeldOut(i, data.Count));
        AnsiConsole.MarkupLine(Markup.Escape(validates
            ? $"data: {data.Count} GIFs in {data.Folder}: {data.Count - held} to train on, {held} held out for validation"
            : $"data: {data.Count} GIFs in {data.Folder}: {data.Count - held} to train on ({held} held out)"));
    }
}

using System.CommandLine;
using System.Globalization;
using Mobius.Cuda;
using Mobius.Cuda.Interop;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Distributed;
using Mobius.Model;
using Mobius.Model.Training;
using Spectre.Console;

namespace Mobius.Cli;

/// <content><c>mobius pretrain</c> and <c>mobius train</c>, and the ranks of a data-parallel run.</content>
public static partial class Commands
{
    // ---- pretrain (stage 1) -----------------------------------------------------------------------

    private static Command Pretrain()
    {
        var steps = new Option<int>("--steps") { Description = "training steps", DefaultValueFactory = _ => 2000 };
        var lr = new Option<float>("--lr") { Description = "learning rate", DefaultValueFactory = _ => 3e-4f };
        var output = new Option<string>("--out") { Description = "checkpoint to write", Required = true };
        var resume = new Option<string?>("--resume") { Description = "continue from this checkpoint" };
        var saveEvery = new Option<int>("--save-every") { Description = "also save every N steps (0: only at the end)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("pretrain", "Stage 1: train the text-to-image UNet and the text encoder on single frames of the emoji clips (or of a --data folder's GIFs, its captions' words added to the vocabulary).")
            { ConfigOption, BackendOption, MathOption, SeedOption, ThreadsOption, MemoryLimitOption, steps, lr, BatchOption, AccumulateOption, RanksOption, CollectivesOption, EmaOption, MinSnrOption, OptimizerStateOption, output, resume, saveEvery, CosineOption, WeightsOnlyOption, DataOption };
        cmd.SetAction(p =>
        {
            int seed = p.GetValue(SeedOption);
            var resumeFrom = p.GetValue(resume);
            var ckpt = resumeFrom is null ? null : Checkpoint.Load(resumeFrom);
            if (ckpt is not null && ckpt.Topology != Topology.Spatial)
            {
                throw new UsageException($"{resumeFrom} is a {ckpt.Topology} checkpoint; pretrain resumes text-to-image checkpoints.");
            }

            var config = ckpt?.Config ?? Configs.Get(p.GetValue(ConfigOption)!);
            var recipe = new Recipe(p, resumeFrom, ckpt);
            int ranks = CheckRanks(recipe.Pick(RanksOption, o => o.Ranks), 0);
            using var rankSet = RankSet.Create(p, ranks, RunMath(p, ckpt));
            var backend = rankSet.Backend;
            string? dataFolder = recipe.Pick(DataOption, _ => ckpt!.Extra.GetValueOrDefault(DataKey));

            // A new model on a folder knows the emoji captions' words and the folder's; a resumed one its own.
            var data = OpenData(dataFolder, config, motions: null);
            var tokenizer = ckpt is not null ? Tokenizer.FromVocabulary(ckpt.Vocabulary, config.TokenLength)
                : Tokenizer.FromCaptions(data is null ? EmojiCaptions.All() : EmojiCaptions.All().Concat(data.Entries.Select(e => e.Caption)), config.TokenLength);
            if (data is not null)
            {
                CheckData(data, tokenizer);
            }

            // A new model on a folder fits its latent codec to the folder's clips (the default is fitted to the emoji
            // clips' light backgrounds); the codec travels in the checkpoint to stage 2 and sampling.
            var train = data?.Subset(Split.Train);
            var codec = ckpt is null && train is not null ? SpaceToDepthCodec.Fit(train) : null;
            if (codec is not null)
            {
                AnsiConsole.MarkupLine(Markup.Escape($"latent codec fitted to the folder: channel scales {string.Join(" ", codec.Scales.Distinct())}, shifts {string.Join(" ", codec.Shifts)}"));
            }

            TextToVideo Load(IBackend b) => ckpt is null ? TextToVideo.Create(b, config, Topology.Spatial, seed, tokenizer, codec) : TextToVideo.Load(b, ckpt, Topology.Spatial, seed);
            using var model = Load(backend);
            rankSet.LoadReplicas(Load);
            var options = new TrainOptions
            {
                Seed = ckpt?.Seed ?? seed, WeightDecay = 0, Ranks = ranks,
                LearningRate = recipe.Pick(lr, o => o.LearningRate),
                Batch = CheckBatch(recipe.Pick(BatchOption, RecordedBatch)),
                Accumulate = CheckAccumulate(recipe.Pick(AccumulateOption, o => o.Accumulate), 0),
                EmaDecay = CheckEma(recipe.Pick(EmaOption, o => o.EmaDecay)),
                MinSnrGamma = CheckMinSnr(recipe.Pick(MinSnrOption, o => o.MinSnrGamma)),
                CosineDecaySteps = CheckCosine(recipe.Pick(CosineOption, o => o.CosineDecaySteps)),
                OptimizerState = ParseStorage(recipe.Pick(OptimizerStateOption, o => StorageName(o.OptimizerState)), OptimizerStateOption),
            };
            recipe.Keep(SeedOption, options.Seed, "seed");
            recipe.Keep(ConfigOption, config.Name, "config");
            recipe.Announce();
            using var trainer = new Trainer(model, rankSet.Replicas, train ?? Comparison.Data(config, options.Seed, Split.Train), Stage.TextToImage, options, rankSet.Collectives);
            rankSet.Announce(trainer);
            if (ckpt is not null)
            {
                trainer.Resume(ckpt);
            }

            string path = CheckWritable(p.GetValue(output)!);
            var extra = new Dictionary<string, string> { ["command"] = "mobius " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1)), [MathKey] = backend.MathMode };
            if (data is not null)
            {
                AnnounceData(data, validates: false);
                extra[DataKey] = dataFolder!;
            }

            Ui.Train($"pretrain {config.Name}{(ranks > 1 ? $" on {ranks} ranks" : "")}", trainer, p.GetValue(steps), p.GetValue(saveEvery), path, extra, Cancellation);
            trainer.Save(path, extra, p.GetValue(WeightsOnlyOption));
            AnsiConsole.MarkupLine($"saved [bold]{Markup.Escape(path)}[/] after step {trainer.StepsDone}");
            return ExitCodes.Success;
        });
        return cmd;
    }

    // ---- train (stage 2) ----------------------------------------------------------------------------

    private static Command Train()
    {
        var topology = new Option<string>("--topology") { Description = "serial or parallel", DefaultValueFactory = _ => "parallel" };
        var from = new Option<string?>("--from") { Description = "the checkpoint to start from: stage 1 (text-to-image; default: the one that ships), or a text-to-video one to fine-tune (serial and loop-bridge checkpoints load into either topology)" };
        var resume = new Option<string?>("--resume") { Description = "continue a stage-2 checkpoint exactly where it stopped" };
        var steps = new Option<int>("--steps") { Description = "training steps", DefaultValueFactory = _ => 200 };
        var lr = new Option<float>("--lr") { Description = "learning rate", DefaultValueFactory = _ => 1e-4f };
        var output = new Option<string>("--out") { Description = "checkpoint to write", Required = true };
        var saveEvery = new Option<int>("--save-every") { Description = "also save every N steps (0: only at the end)", DefaultValueFactory = _ => 0 };
        var keepBest = new Option<bool>("--keep-best") { Description = "also save the weights of the lowest validation loss as OUT.best.safetensors (needs --validate-every)" };
        var log = new Option<string?>("--log") { Description = "also write every step's loss, time, gradient norm and validation loss to this CSV file (flushed each step)" };
        var cmd = new Command("train", "Stage 2: train only the temporal layers (spatial UNet and text encoder frozen) in the serial or parallel topology.")
            { topology, from, resume, steps, lr, CosineOption, BatchOption, AccumulateOption, RanksOption, CollectivesOption, EmaOption, MinSnrOption, FrameNoiseOption, output, saveEvery, BridgeOption, MotionOption, DataOption, BackendOption, MathOption, SeedOption, ThreadsOption, MemoryLimitOption, WeightsOnlyOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, OptimizerStateOption, ValidateEveryOption, ValidationBatchesOption, keepBest, LoopCorrectionOption, LoopCorrectionWarmupOption, LoopCorrectionMomentumOption, LoopCorrectionModeOption, log };
        cmd.SetAction(p =>
        {
            var topo = ParseTopology(p.GetValue(topology)!);
            int validateEvery = p.GetValue(ValidateEveryOption);
            int validationBatches = p.GetValue(ValidationBatchesOption);
            CheckValidation(validateEvery, validationBatches, p.GetValue(keepBest));
            float? frameNoise = FrameNoise(p);
            var resumeFrom = p.GetValue(resume);
            var ckpt = Checkpoint.Load(resumeFrom ?? p.GetValue(from) ?? DefaultCheckpoint);
            if (resumeFrom is not null && ckpt.Topology == Topology.Spatial)
            {
                throw new UsageException($"{resumeFrom} is a text-to-image checkpoint: start stage 2 from it with --from, or resume its stage 1 with mobius pretrain --resume.");
            }

            if (resumeFrom is not null && ckpt.Topology != topo)
            {
                throw new UsageException($"{resumeFrom} was trained as {ckpt.Topology}; resume it with --topology {ckpt.Topology.ToString().ToLowerInvariant()}.");
            }

            // A resumed run takes the options of the run that wrote the checkpoint, unless the command line says otherwise.
            var recipe = new Recipe(p, resumeFrom, ckpt);
            int loopCorrection = recipe.Pick(LoopCorrectionOption, o => o.LoopCorrectionEvery);
            float momentum = recipe.Pick(LoopCorrectionMomentumOption, o => o.LoopCorrectionMomentum);
            var correctionMode = ParseLoopCorrectionMode(loopCorrection, momentum, recipe.Pick(LoopCorrectionModeOption, o => o.LoopCorrectionMode.ToString().ToLowerInvariant()));
            int correctionWarmup = CheckLoopCorrectionWarmup(recipe.Pick(LoopCorrectionWarmupOption, o => o.LoopCorrectionWarmup), loopCorrection);
            string? motions = recipe.Pick(MotionOption, _ => ckpt.Extra.GetValueOrDefault(MotionsKey));
            string? dataFolder = recipe.Pick(DataOption, _ => ckpt.Extra.GetValueOrDefault(DataKey));
            var data = OpenData(dataFolder, ckpt.Config, motions);
            if (data is not null)
            {
                CheckData(data, Tokenizer.FromVocabulary(ckpt.Vocabulary, ckpt.Config.TokenLength));
            }

            var heldOut = data is not null && validateEvery > 0 ? data.Subset(Split.Validation) : null; // a folder too small to validate on fails here
            var options = new TrainOptions
            {
                Seed = resumeFrom is null ? p.GetValue(SeedOption) : ckpt.Seed,
                LearningRate = recipe.Pick(lr, o => o.LearningRate),
                Batch = CheckBatch(recipe.Pick(BatchOption, RecordedBatch)),
                Accumulate = CheckAccumulate(recipe.Pick(AccumulateOption, o => o.Accumulate), loopCorrection),
                EmaDecay = CheckEma(recipe.Pick(EmaOption, o => o.EmaDecay)),
                CosineDecaySteps = CheckCosine(recipe.Pick(CosineOption, o => o.CosineDecaySteps)),
                MinSnrGamma = CheckMinSnr(recipe.Pick(MinSnrOption, o => o.MinSnrGamma)),
                RecomputeSpatial = recipe.Pick(RecomputeOption, o => o.RecomputeSpatial),
                RecomputeTemporal = recipe.Pick(RecomputeTemporalOption, o => o.RecomputeTemporal),
                FrozenWeights = ParseStorage(recipe.Pick(FrozenWeightsOption, o => StorageName(o.FrozenWeights)), FrozenWeightsOption),
                SavedActivations = ParseStorage(recipe.Pick(SavedActivationsOption, o => StorageName(o.SavedActivations)), SavedActivationsOption),
                OptimizerState = ParseStorage(recipe.Pick(OptimizerStateOption, o => StorageName(o.OptimizerState)), OptimizerStateOption),
                LoopCorrectionEvery = loopCorrection, LoopCorrectionMomentum = momentum, LoopCorrectionMode = correctionMode, LoopCorrectionWarmup = correctionWarmup,
                Ranks = CheckRanks(recipe.Pick(RanksOption, o => o.Ranks), loopCorrection),
            };
            var parsedMotions = ParseMotions(motions);
            recipe.Keep(SeedOption, options.Seed, "seed");

            using var rankSet = RankSet.Create(p, options.Ranks, RunMath(p, resumeFrom is null ? null : ckpt));
            var backend = rankSet.Backend;
            int seed = options.Seed;
            string? bridge = ParseBridge(p.GetValue(BridgeOption));
            using var model = TextToVideo.Load(backend, ckpt, topo, seed, bridge, frameNoise);
            rankSet.LoadReplicas(b => TextToVideo.Load(b, ckpt, topo, seed, bridge, frameNoise));
            using var trainer = new Trainer(model, rankSet.Replicas, data?.Subset(Split.Train) ?? Comparison.Data(ckpt.Config, seed, Split.Train, parsedMotions), Stage.TextToVideo, options, rankSet.Collectives);
            rankSet.Announce(trainer);
            if (resumeFrom is not null)
            {
                trainer.Resume(ckpt);
            }

            recipe.Announce();
            string path = CheckWritable(p.GetValue(output)!);
            var extra = new Dictionary<string, string> { ["command"] = "mobius " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1)), [MathKey] = backend.MathMode };
            if (motions is not null)
            {
                extra[MotionsKey] = motions;
            }

            if (data is not null)
            {
                AnnounceData(data, validateEvery > 0);
                extra[DataKey] = dataFolder!;
            }

            string title = $"train {topo.ToString().ToLowerInvariant()} {ckpt.Config.Name}{(options.Ranks > 1 ? $" on {options.Ranks} ranks" : "")}";
            Func<int, float>? validate = null;
            if (validateEvery > 0)
            {
                // Held-out clips of the same motions; the same batches at every validation.
                var held = heldOut ?? Comparison.Data(ckpt.Config, seed, Split.Validation, parsedMotions);
                float best = float.PositiveInfinity;
                string bestPath = Path.ChangeExtension(path, null) + ".best.safetensors";
                string batches = validationBatches.ToString(CultureInfo.InvariantCulture);
                if (resumeFrom is not null && p.GetValue(keepBest) && PreviousBest(bestPath, trainer.StepsDone, batches) is { } previous)
                {
                    // A resumed run keeps the best of the steps before it: only a lower validation loss replaces that file.
                    best = previous.Loss;
                    AnsiConsole.MarkupLine(Markup.Escape($"best so far: validation loss {previous.Loss:0.0000} after step {previous.Step} ({bestPath})"));
                }

                using (trainer.EmaWeights())
                {
                    AnsiConsole.MarkupLine($"validation loss before step {trainer.StepsDone + 1}{(trainer.HasEma ? " (EMA weights)" : "")}: {trainer.Evaluate(held, validationBatches, seed):0.0000}");
                }

                validate = step =>
                {
                    // With an EMA, the average is validated, and kept as the best weights.
                    using var ema = trainer.EmaWeights();
                    float v = trainer.Evaluate(held, validationBatches, seed);
                    if (p.GetValue(keepBest) && v < best)
                    {
                        best = v;
                        trainer.Save(bestPath, new Dictionary<string, string>(extra)
                        {
                            [BestLossKey] = v.ToString("R", CultureInfo.InvariantCulture),
                            [BestBatchesKey] = batches,
                        }, weightsOnly: true);
                    }

                    return v;
                };
            }

            using (var logWriter = p.GetValue(log) is { } logPath ? OpenLog(logPath) : null)
            {
                Ui.Train(title, trainer, p.GetValue(steps), p.GetValue(saveEvery), path, extra, Cancellation, validateEvery, validate, logWriter);
            }

            if (trainer.LoopCoefficients() is { Count: > 0 } coefficients)
            {
                var table = new Table().Title("loop correction: fitted coefficients by temporal layer").AddColumns("layer", "mean", "min", "max");
                foreach (var (layer, values) in ReportWriter.LoopCoefficientsByLayer(coefficients))
                {
                    table.AddRow(layer, $"{values.Average():0.00}", $"{values.Min():0.00}", $"{values.Max():0.00}");
                }

                AnsiConsole.Write(table);
            }

            trainer.Save(path, extra, p.GetValue(WeightsOnlyOption));
            AnsiConsole.MarkupLine($"saved [bold]{Markup.Escape(path)}[/] after step {trainer.StepsDone}");
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary><c>--ranks</c>, checked: at least 1, and 1 beside <c>--loop-correction</c>.</summary>
    private static int CheckRanks(int ranks, int loopCorrection)
    {
        if (ranks < 1)
        {
            throw new UsageException($"--ranks must be at least 1, got {ranks}.");
        }

        if (ranks > 1 && loopCorrection > 0)
        {
            throw new UsageException("--ranks does not combine with --loop-correction, whose exact steps recompute one batch on one model.");
        }

        return ranks;
    }

    /// <summary>
    /// The backends of a run, one per rank (<c>--ranks</c>), each with its own <c>--memory-limit-mb</c>: on the cpu
    /// backend each with its share of <c>--threads</c> (at least one), on the cuda backend rank r on device r mod the
    /// device count; how the ranks average their gradients (<c>--collectives</c>); and, once loaded, the replicas of
    /// rank 0's model. Disposes the replicas, the collectives, then the backends.
    /// </summary>
    private sealed class RankSet : IDisposable
    {
        private readonly List<IBackend> _backends = [];
        private readonly List<TextToVideo> _replicas = [];

        /// <summary>Rank 0's backend.</summary>
        public IBackend Backend => _backends[0];

        /// <summary>The models of ranks 1 and up (none until <see cref="LoadReplicas"/>).</summary>
        public IReadOnlyList<TextToVideo> Replicas => _replicas;

        /// <summary>How the ranks average their gradients (null with one rank).</summary>
        public ICollectives? Collectives { get; private set; }

        public static RankSet Create(ParseResult p, int ranks, string? math)
        {
            var plan = RankPlan.Of(p.GetValue(BackendOption)!, ranks, p.GetValue(ThreadsOption), p.GetValue(MemoryLimitOption), math, p.GetValue(CollectivesOption)!);
            var set = new RankSet();
            try
            {
                for (int r = 0; r < ranks; r++)
                {
                    set._backends.Add(plan.Create(r));
                }

                set.Collectives = ranks > 1 ? plan.Collectives(set._backends) : null;
            }
            catch
            {
                set.Dispose();
                throw;
            }

            return set;
        }

        /// <summary>With more than one rank, says where they run and how their gradients are averaged.</summary>
        public void Announce(Trainer trainer)
        {
            if (_backends.Count < 2)
            {
                return;
            }

            double mib = trainer.TrainableParameters * 4 / 1048576.0;
            string how = Collectives is HostCollectives ? "through host memory" : $"with {Collectives!.Name} on the devices";
            AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                $"data parallel: {_backends.Count} ranks on {string.Join(", ", _backends.Select(b => b.DeviceName).Distinct())}; each step averages {mib:0.0} MiB of gradients per rank {how}")));
        }

        /// <summary>Loads a model on every backend but rank 0's.</summary>
        public void LoadReplicas(Func<IBackend, TextToVideo> load)
        {
            foreach (var backend in _backends.Skip(1 + _replicas.Count))
            {
                _replicas.Add(load(backend));
            }
        }

        public void Dispose()
        {
            _replicas.ForEach(m => m.Dispose());
            _replicas.Clear();
            (Collectives as IDisposable)?.Dispose();
            Collectives = null;
            _backends.ForEach(b => b.Dispose());
            _backends.Clear();
        }
    }

    /// <summary>
    /// Where a run's ranks go (<c>--ranks</c>, <c>--threads</c>, <c>--collectives</c>): on the cpu backend each rank has
    /// its share of the threads (at least one); on the cuda backend rank r is on device r mod the device count; the
    /// ranks average through NCCL (<c>nccl</c>, or <c>auto</c> where every cuda rank has a device of its own and NCCL
    /// loads) or through host memory.
    /// </summary>
    private sealed record RankPlan(string Backend, int Threads, long MemoryLimitMb, string? Math, int Devices, bool Nccl)
    {
        public static RankPlan Of(string backend, int ranks, int threads, long memoryLimitMb, string? math, string collectives)
        {
            if (ranks > 1)
            {
                threads = System.Math.Max(1, (threads > 0 ? threads : Environment.ProcessorCount) / ranks);
            }

            bool cuda = backend.Equals("cuda", StringComparison.OrdinalIgnoreCase);
            string how = collectives.ToLowerInvariant();
            if (how is not ("auto" or "host" or "nccl"))
            {
                throw new UsageException($"--collectives must be auto, nccl or host, got '{collectives}'.");
            }

            if (how == "nccl" && !cuda)
            {
                throw new UsageException("--collectives nccl reduces device memory: it needs --backend cuda (the cpu backend's ranks average through host memory).");
            }

            int devices = ranks > 1 && cuda ? System.Math.Max(1, Backends.CudaDeviceCount()) : 1;
            bool nccl = ranks > 1 && (how == "nccl" || (how == "auto" && cuda && devices >= ranks && NcclCollectives.Available(out _, out _)));
            return new RankPlan(backend, threads, memoryLimitMb, math, devices, nccl);
        }

        /// <summary>The backend of rank <paramref name="rank"/>.</summary>
        public IBackend Create(int rank) => Backends.Create(Backend, Threads, MemoryLimitMb, Math, ordinal: rank % Devices);

        /// <summary>How ranks on <paramref name="backends"/> (rank 0's first) average their gradients.</summary>
        public ICollectives Collectives(IReadOnlyList<IBackend> backends) => Nccl ? OpenNccl(backends) : new HostCollectives();

        private static NcclCollectives OpenNccl(IReadOnlyList<IBackend> backends)
        {
            try
            {
                return new NcclCollectives(backends.Cast<CudaBackend>().ToList());
            }
            catch (Exception e) when (e is DllNotFoundException or CudaException)
            {
                throw new BackendUnavailableException($"--collectives nccl: {e.Message}", e);
            }
        }
    }
}

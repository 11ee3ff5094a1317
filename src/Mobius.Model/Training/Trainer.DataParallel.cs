using System.Runtime.ExceptionServices;
using Mobius.Engine;
using Mobius.Engine.Optim;

namespace Mobius.Model.Training;

/// <content>Data parallel (<see cref="TrainOptions.Ranks"/>): the replicas, their threads and the gradient average.</content>
public sealed partial class Trainer
{
    /// <summary>Checks the data-parallel arguments: the rank count, and replicas that match rank 0 and have backends of their own.</summary>
    private static void CheckReplicas(TextToVideo model, IReadOnlyList<TextToVideo> replicas, TrainOptions options)
    {
        if (options.Ranks < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"data parallel needs at least 1 rank, got {options.Ranks}.");
        }

        if (replicas.Count != options.Ranks - 1)
        {
            throw new ArgumentException($"the options ask for {options.Ranks} rank(s): the model and {options.Ranks - 1} replica(s); {replicas.Count} replica(s) were given.", nameof(replicas));
        }

        if (options.Ranks > 1 && options.LoopCorrectionEvery > 0)
        {
            throw new ArgumentException("the loop correction's exact steps recompute one batch on one model; they do not combine with data parallel.", nameof(options));
        }

        var backends = new HashSet<IBackend> { model.Backend };
        foreach (var replica in replicas)
        {
            if (replica.Config != model.Config || replica.Topology != model.Topology)
            {
                throw new ArgumentException($"a replica must be the model's config and topology ({model.Config.Name}, {model.Topology}); one is {replica.Config.Name}, {replica.Topology}.", nameof(replicas));
            }

            if (!backends.Add(replica.Backend))
            {
                throw new ArgumentException("every rank needs a backend of its own: the ranks run at the same time.", nameof(replicas));
            }
        }
    }

    /// <summary>The backends of the ranks, rank 0's first.</summary>
    private IEnumerable<IBackend> Backends => _replicas.Select(r => r.Model.Backend).Prepend(_model.Backend);

    /// <summary>
    /// Data parallel: every rank's forward and backward on its run of <paramref name="batches"/> at once (rank 0 on
    /// this thread, each replica on a thread of its own), then the gradients averaged across the ranks. Returns the
    /// mean loss over all the batches and rank 0's saved bytes. A failure on any rank clears every rank's
    /// gradients and is thrown here.
    /// </summary>
    internal (float Loss, long Saved, SavedBreakdown Breakdown) DataParallel(List<Batch> batches)
    {
        int a = Options.Accumulate;
        var results = new (float Loss, long Saved, SavedBreakdown Breakdown)[_replicas.Count + 1];
        try
        {
            OnEveryRank(rank =>
            {
                var (model, optimizer) = rank == 0 ? (_model, _optimizer) : _replicas[rank - 1];
                results[rank] = Backprop(batches.GetRange(rank * a, a), model, optimizer);
            });

            var byRank = new List<IReadOnlyList<Tensor>> { Gradients(_optimizer, 0) };
            byRank.AddRange(_replicas.Select((r, i) => Gradients(r.Optimizer, i + 1)));
            _collectives.AllReduceMean(byRank);
        }
        catch
        {
            _optimizer.ZeroGrad();
            _replicas.ForEach(r => r.Optimizer.ZeroGrad());
            throw;
        }

        double loss = 0;
        foreach (var r in results)
        {
            loss += r.Loss;
        }

        return ((float)(loss / results.Length), results[0].Saved, results[0].Breakdown);
    }

    /// <summary>The gradients of <paramref name="optimizer"/>'s parameters in order; every one must have one.</summary>
    private static List<Tensor> Gradients(AdamW optimizer, int rank) =>
        optimizer.Parameters.Select(np => np.Parameter.Grad
            ?? throw new InvalidOperationException($"rank {rank}: '{np.Name}' has no gradient after backward; data parallel averages every trainable parameter's.")).ToList();

    /// <summary>
    /// Runs <paramref name="work"/> for every rank at once: rank 0 on this thread, each replica on a thread of its own
    /// (a tape is a thread's). Waits for all; then throws the lowest rank's failure, if any.
    /// </summary>
    private void OnEveryRank(Action<int> work)
    {
        var others = Enumerable.Range(1, _replicas.Count)
            .Select(rank => Task.Factory.StartNew(() => work(rank), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToArray();
        Exception? first = null;
        try
        {
            work(0);
        }
        catch (Exception e)
        {
            first = e;
        }

        foreach (var task in others)
        {
            try
            {
                task.GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                first ??= e;
            }
        }

        if (first is not null)
        {
            ExceptionDispatchInfo.Throw(first);
        }
    }

    /// <summary><see cref="OnEveryRank"/> for the replicas only (rank 0 done already).</summary>
    private void OnEveryReplica(Action<(TextToVideo Model, AdamW Optimizer)> work) =>
        OnEveryRank(rank =>
        {
            if (rank > 0)
            {
                work(_replicas[rank - 1]);
            }
        });
}

using System.Text;

namespace Mobius.Data;

/// <summary>
/// A word-level tokenizer: text is lower-cased and split into runs of letters and digits, every other
/// non-space character (punctuation, symbols) being a token of its own. An encoding is
/// <c>&lt;bos&gt; words... &lt;eos&gt; &lt;pad&gt;...</c>, exactly <see cref="MaxLength"/> ids long.
/// The vocabulary (id = position) is a plain string list, so it can be stored in a checkpoint and
/// restored with <see cref="FromVocabulary"/>.
/// </summary>
public sealed class Tokenizer
{
    /// <summary>Id of the padding token.</summary>
    public const int PadId = 0;

    /// <summary>Id of the begin-of-text token.</summary>
    public const int BosId = 1;

    /// <summary>Id of the end-of-text token.</summary>
    public const int EosId = 2;

    /// <summary>Id of the unknown-word token.</summary>
    public const int UnkId = 3;

    /// <summary>The special tokens, at ids 0 to 3.</summary>
    public static readonly IReadOnlyList<string> Specials = ["<pad>", "<bos>", "<eos>", "<unk>"];

    private readonly string[] _words;
    private readonly IReadOnlyList<string> _knownWords;
    private readonly Dictionary<string, int> _ids;

    private Tokenizer(string[] words, int maxLength)
    {
        if (maxLength < 3)
        {
            throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "A tokenizer's max length must leave room for <bos>, one word and <eos> (at least 3).");
        }

        _words = words;
        _knownWords = Array.AsReadOnly(words[Specials.Count..]);
        _ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < words.Length; i++)
        {
            if (!_ids.TryAdd(words[i], i))
            {
                throw new ArgumentException($"Vocabulary has \"{words[i]}\" twice (ids {_ids[words[i]]} and {i}).", nameof(words));
            }
        }

        MaxLength = maxLength;
    }

    /// <summary>The vocabulary: the word with id i at position i, the special tokens first.</summary>
    public IReadOnlyList<string> Vocabulary => Array.AsReadOnly(_words);

    /// <summary>Number of ids, special tokens included.</summary>
    public int VocabularySize => _words.Length;

    /// <summary>Length of every encoding, <c>&lt;bos&gt;</c> and <c>&lt;eos&gt;</c> included.</summary>
    public int MaxLength { get; }

    /// <summary>Words of a text that fit one encoding.</summary>
    public int MaxWords => MaxLength - 2;

    /// <summary>
    /// A tokenizer whose vocabulary is every word of <paramref name="captions"/> (sorted, after the
    /// special tokens). <paramref name="maxLength"/> defaults to the longest caption plus <c>&lt;bos&gt;</c> and <c>&lt;eos&gt;</c>.
    /// </summary>
    public static Tokenizer FromCaptions(IEnumerable<string> captions, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(captions);
        var words = new SortedSet<string>(StringComparer.Ordinal);
        int longest = 0;
        foreach (string caption in captions)
        {
            string[] w = SplitWords(caption);
            words.UnionWith(w);
            longest = Math.Max(longest, w.Length);
        }

        return new Tokenizer([.. Specials, .. words], maxLength ?? Math.Max(3, longest + 2));
    }

    /// <summary>A tokenizer that covers every caption <see cref="EmojiClips"/> can produce.</summary>
    public static Tokenizer ForEmoji(int? maxLength = null) => FromCaptions(EmojiCaptions.All(), maxLength);

    /// <summary>Restores a tokenizer from its <see cref="Vocabulary"/> (as stored in a checkpoint).</summary>
    public static Tokenizer FromVocabulary(IReadOnlyList<string> vocabulary, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        if (vocabulary.Count < Specials.Count || !vocabulary.Take(Specials.Count).SequenceEqual(Specials))
        {
            throw new ArgumentException($"A vocabulary must start with {string.Join(", ", Specials)}.", nameof(vocabulary));
        }

        foreach (string word in vocabulary.Skip(Specials.Count))
        {
            if (SplitWords(word) is not [var only] || only != word)
            {
                throw new ArgumentException($"Vocabulary entry \"{word}\" is not a single lower-case token.", nameof(vocabulary));
            }
        }

        return new Tokenizer([.. vocabulary], maxLength);
    }

    /// <summary>Lower-cases <paramref name="text"/> and splits it into words and single punctuation or symbol characters.</summary>
    public static string[] SplitWords(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = new List<string>();
        var word = new StringBuilder();
        foreach (char ch in text)
        {
            if (char.IsLetterOrDigit(ch))
            {
                word.Append(char.ToLowerInvariant(ch));
                continue;
            }

            if (word.Length > 0)
            {
                words.Add(word.ToString());
                word.Clear();
            }

            if (!char.IsWhiteSpace(ch) && !char.IsControl(ch))
            {
                words.Add(ch.ToString());
            }
        }

        if (word.Length > 0)
        {
            words.Add(word.ToString());
        }

        return [.. words];
    }

    /// <summary>The words of <paramref name="text"/> the vocabulary lacks, each once, in order.</summary>
    public string[] UnknownWords(string text) => UnknownWords(SplitWords(text));

    /// <summary>The words of <paramref name="words"/> (as <see cref="SplitWords"/> gives them) the vocabulary lacks, each once, in order.</summary>
    public string[] UnknownWords(string[] words) => [.. words.Where(w => !_ids.ContainsKey(w)).Distinct()];

    /// <summary>The vocabulary without the special tokens, in id order.</summary>
    public IReadOnlyList<string> KnownWords => _knownWords;

    /// <summary>
    /// Up to <paramref name="max"/> known words close to <paramref name="word"/> (lower-case, as <see cref="SplitWords"/>
    /// gives it), closest first: those within a small edit distance (one edit per three letters, at least one, but not
    /// every letter of the word), and
    /// those sharing a stem of at least three letters that leaves at most three letters of the shorter word over
    /// ("moves": "moving"). None for punctuation, nor when nothing is close.
    /// </summary>
    public IReadOnlyList<string> Suggest(string word, int max = 3)
    {
        ArgumentNullException.ThrowIfNull(word);
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        if (word.Length == 0 || !char.IsLetterOrDigit(word[0]))
        {
            return [];
        }

        var close = new List<(string Word, int Distance, int Stem)>();
        foreach (string known in KnownWords)
        {
            if (known == word || !char.IsLetterOrDigit(known[0]))
            {
                continue;
            }

            int distance = EditDistance(word, known);
            int stem = 0;
            while (stem < Math.Min(word.Length, known.Length) && word[stem] == known[stem])
            {
                stem++;
            }

            bool near = distance <= Math.Max(1, word.Length / 3) && distance < word.Length; // one letter is no evidence
            bool sameStem = stem >= 3 && Math.Min(word.Length, known.Length) - stem <= 3;
            if (near || sameStem)
            {
                close.Add((known, distance, stem));
            }
        }

        return [.. close.OrderBy(c => c.Distance).ThenByDescending(c => c.Stem).ThenBy(c => c.Word, StringComparer.Ordinal).Take(max).Select(c => c.Word)];
    }

    /// <summary>Levenshtein distance (insertions, deletions and substitutions each count one).</summary>
    internal static int EditDistance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (int i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
                current[j] = Math.Min(substitute, Math.Min(previous[j], current[j - 1]) + 1);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }

    /// <summary>True when every word of <paramref name="text"/> is in the vocabulary.</summary>
    public bool Covers(string text) => SplitWords(text).All(_ids.ContainsKey);

    /// <summary>
    /// The ids of <paramref name="text"/>: <c>&lt;bos&gt;</c>, one id per word, <c>&lt;eos&gt;</c>, then
    /// <c>&lt;pad&gt;</c> up to <see cref="MaxLength"/>. Strict (the default): unknown words throw
    /// <see cref="UnknownWordsException"/> naming them all, and a text longer than <see cref="MaxWords"/>
    /// throws <see cref="TextTooLongException"/>. Lenient: unknown words become <c>&lt;unk&gt;</c> and
    /// the text is cut after <see cref="MaxWords"/> words.
    /// </summary>
    public int[] Encode(string text, bool strict = true)
    {
        string[] words = SplitWords(text);
        if (strict)
        {
            var unknown = UnknownWords(words);
            if (unknown.Length > 0)
            {
                throw new UnknownWordsException(unknown, [.. unknown.Select(w => Suggest(w))], KnownWords);
            }

            if (words.Length > MaxWords)
            {
                throw new TextTooLongException(words.Length, MaxWords, MaxLength);
            }
        }

        var ids = new int[MaxLength];
        int n = Math.Min(words.Length, MaxWords);
        ids[0] = BosId;
        for (int i = 0; i < n; i++)
        {
            ids[i + 1] = _ids.GetValueOrDefault(words[i], UnkId);
        }

        ids[n + 1] = EosId;
        return ids;
    }

    /// <summary>The words of an encoding, joined by spaces; special tokens are left out except <c>&lt;unk&gt;</c>.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var words = new List<string>();
        foreach (int id in ids)
        {
            if (id < 0 || id >= _words.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id outside the vocabulary of {_words.Length}.");
            }

            if (id == EosId)
            {
                break;
            }

            if (id != PadId && id != BosId)
            {
                words.Add(_words[id]);
            }
        }

        return string.Join(' ', words);
    }
}

/// <summary>
/// A text has words the tokenizer's vocabulary does not hold. The message names each, with the known words
/// closest to it ("did you mean ...") and, for punctuation, that it can be left out.
/// </summary>
public sealed class UnknownWordsException : ArgumentException
{
    /// <summary>An exception for <paramref name="words"/>; <paramref name="suggestions"/> (one list per word) and the
    /// tokenizer's <paramref name="knownWords"/> are optional.</summary>
    public UnknownWordsException(IReadOnlyList<string> words, IReadOnlyList<IReadOnlyList<string>>? suggestions = null, IReadOnlyList<string>? knownWords = null)
        : base(Describe(words, suggestions))
    {
        if (suggestions is not null && suggestions.Count != words.Count)
        {
            throw new ArgumentException($"{suggestions.Count} suggestion lists for {words.Count} unknown words.", nameof(suggestions));
        }

        Words = words;
        Suggestions = suggestions ?? [.. words.Select(_ => (IReadOnlyList<string>)[])];
        KnownWords = knownWords ?? [];
    }

    /// <summary>The unknown words, each once, in the order they first appear.</summary>
    public IReadOnlyList<string> Words { get; }

    /// <summary>For each of <see cref="Words"/>, the known words closest to it (possibly none), closest first.</summary>
    public IReadOnlyList<IReadOnlyList<string>> Suggestions { get; }

    /// <summary>The vocabulary the text was checked against, special tokens left out (empty when not given).</summary>
    public IReadOnlyList<string> KnownWords { get; }

    private static string Describe(IReadOnlyList<string> words, IReadOnlyList<IReadOnlyList<string>>? suggestions)
    {
        ArgumentNullException.ThrowIfNull(words);
        var parts = new List<string>();
        for (int i = 0; i < words.Count; i++)
        {
            string w = words[i];
            if (w.Length > 0 && !char.IsLetterOrDigit(w[0]))
            {
                parts.Add($"\"{w}\" (punctuation the vocabulary lacks: leave it out)");
            }
            else if (suggestions is not null && i < suggestions.Count && suggestions[i].Count > 0)
            {
                parts.Add($"{w} (did you mean {string.Join(" or ", suggestions[i].Select(s => $"\"{s}\""))}?)");
            }
            else
            {
                parts.Add(w);
            }
        }

        return $"Text has unknown words: {string.Join(", ", parts)}.";
    }
}

/// <summary>A text has more words than the tokenizer's encodings hold.</summary>
public sealed class TextTooLongException(int words, int maxWords, int maxLength)
    : ArgumentException($"Text has {words} words; the model's text encoder takes at most {maxWords} ({maxLength} tokens with <bos> and <eos>).")
{
    /// <summary>Words in the text.</summary>
    public int Words { get; } = words;

    /// <summary>The most words an encoding holds.</summary>
    public int MaxWords { get; } = maxWords;
}

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
    private readonly Dictionary<string, int> _ids;

    private Tokenizer(string[] words, int maxLength)
    {
        if (maxLength < 3)
        {
            throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, "A tokenizer's max length must leave room for <bos>, one word and <eos> (at least 3).");
        }

        _words = words;
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

    /// <summary>True when every word of <paramref name="text"/> is in the vocabulary.</summary>
    public bool Covers(string text) => SplitWords(text).All(_ids.ContainsKey);

    /// <summary>
    /// The ids of <paramref name="text"/>: <c>&lt;bos&gt;</c>, one id per word, <c>&lt;eos&gt;</c>, then
    /// <c>&lt;pad&gt;</c> up to <see cref="MaxLength"/>. Strict (the default): unknown words throw
    /// <see cref="UnknownWordsException"/> naming them all, and a text longer than <see cref="MaxWords"/>
    /// throws <see cref="ArgumentException"/>. Lenient: unknown words become <c>&lt;unk&gt;</c> and
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
                throw new UnknownWordsException(unknown);
            }

            if (words.Length > MaxWords)
            {
                throw new ArgumentException($"Text has {words.Length} words; at most {MaxWords} fit (max length {MaxLength} with <bos> and <eos>).", nameof(text));
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

/// <summary>A text has words the tokenizer's vocabulary does not hold.</summary>
public sealed class UnknownWordsException(IReadOnlyList<string> words)
    : ArgumentException($"Text has unknown words: {string.Join(", ", words)}.")
{
    /// <summary>The unknown words, each once, in the order they first appear.</summary>
    public IReadOnlyList<string> Words { get; } = words;
}

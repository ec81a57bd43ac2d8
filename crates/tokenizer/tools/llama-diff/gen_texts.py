"""Random test texts for the differential test: mixtures of scripts, emoji, digits, whitespace
runs, punctuation, contractions, special-token look-alikes, control and rare code points, code,
slices of the GPL-3 text, and runs of random code points from every plane.

usage: gen_texts.py N SEED OUT.bin [GPL-3 path]   (OUT: u32 LE length + UTF-8 bytes per text)
"""
import random
import struct
import sys

n, seed, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
gpl_path = sys.argv[4] if len(sys.argv) > 4 else None
random.seed(seed)
words = ["Hello", "world", "the", "The", "THE", "naïve", "café", "Ångström", "straße", "ÉCOLE", "Москва",
         "привет", "Γειά", "σου", "مرحبا", "بالعالم", "שלום", "नमस्ते", "हिन्दी", "สวัสดี", "ภาษาไทย", "世界",
         "中文字符", "こんにちは", "カタカナ", "한국어", "안녕하세요", "ﬁnance", "ｆｕｌｌｗｉｄｔｈ", "İstanbul", "ǅemal",
         "ß", "ΣΊΣΥΦΟΣ", "x", "a", "I", "apple", "GPL", "license", "Foundation", "don", "won", "they", "we"]
emoji = ["🎉", "🚀", "👩‍👩‍👧‍👦", "🇫🇷", "✅", "😶‍🌫️", "👍🏽", "❤️", "🦙", "🤖", "🧿", "☃", "⚡"]
digits = ["0", "7", "42", "123", "1234", "12345", "1234567", "3.14159", "1,000,000", "٣٤٥", "１２３", "½", "²",
          "Ⅻ", "007", "2024-01-01"]
spaces = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \n",
          "\n ", "\u00a0", "\u3000", "\u2009", "\u0085", "\u000b", "\u000c", "\u200b", "\u2028", " \t \n"]
punct = [".", ",", "!", "?", "...", "!!!", "?!", "'", "\"", "(", ")", "[", "]", "{", "}", "<", ">", "<=", "=>",
         "->", "::", ";", "—", "–", "-", "_", "__", "#", "@", "$", "%", "^", "&", "*", "+", "=", "|", "\\", "/",
         "~", "`", "’", "“", "”", "«", "»", "¿", "¡", "…", "・", "。", "、", "，"]
contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D", "’s"]
specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<reponame>", "<file_sep>", "<bos>",
            "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<s>", "</s>", "<unused5>",
            "[multimodal]", "<table>", "</td>", "<0x41>", "<|im_start", "im_end|>", "<<|im_end|>>",
            "<|begin_of_text|>", "<|eot_id|>", "<|end|>", "<|user|>", "<|fim_prefix|>"]
weird = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\u0301", "\u0308", "e\u0301", "\u0378", "\ue000",
         "\U0010fffd", "\ufffe", "\U0001d518", "\U0001f9ff", "\u00ad", "\u200d", "\ufeff", "\u0600", "\U000e0001"]
code = ["fn main() {\n    println!(\"hi\");\n}", "def f(x):\n\treturn x**2", "if (a && b) { return; }",
        "#include <stdio.h>", "SELECT * FROM t WHERE id=1;", "x += 1 // comment", "<div class=\"a\">text</div>",
        "$ ls -la | grep foo", "{\"key\": [1, 2, 3]}"]
pools = [words] * 6 + [emoji, digits, spaces, spaces, punct, punct, contractions, specials, weird, code]


def random_cpt():
    while True:
        r = random.random()
        if r < 0.3:
            c = random.randint(0x20, 0x7E)
        elif r < 0.5:
            c = random.randint(0x80, 0x2FFF)
        elif r < 0.7:
            c = random.randint(0x3000, 0xFFFF)
        elif r < 0.9:
            c = random.randint(0x10000, 0x10FFFF)
        else:
            c = random.choice([9, 10, 13, 32, 32, 32, 0xA0, 0x3000, 0x85, 0x2028, 39])
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


texts = []
for _ in range(n):
    parts = []
    for _ in range(random.randint(1, 14)):
        p = random.choice(random.choice(pools))
        parts.append(" " + p if random.random() < 0.3 else p)
    texts.append(random.choice(["", " ", "", ""]).join(parts))
for _ in range(n // 2):
    texts.append("".join(random_cpt() for _ in range(random.randint(1, 40))))
for pool in pools:
    texts.extend(pool)
texts += ["", " ", "  ", "\n", " \n", "a", "'", "''", "'s", "a's", "A'S", "  leading", "trailing  ", "x" * 300,
          " " * 300 + "y", "9" * 100, "🎉" * 50]
if gpl_path:
    gpl = open(gpl_path, encoding="utf-8").read()
    for _ in range(20):
        a = random.randint(0, len(gpl) - 2000)
        texts.append(gpl[a:a + random.randint(1, 2000)])
with open(out, "wb") as f:
    for t in texts:
        b = t.encode("utf-8")
        f.write(struct.pack("<I", len(b)))
        f.write(b)
print(f"{len(texts)} texts")

"""Multilingual query/passage pairs used by the parity gate, the fp16 range check and tests.

Real text in many scripts (Latin, CJK, Arabic, Cyrillic, Devanagari, Hangul, Greek, Thai),
plus emoji, source code and numbers, because tokenization and fp16 range problems hide in
exactly these corners. Long passages are built by repeating paragraphs so that some pairs
exceed any max_length and exercise truncation.
"""

from __future__ import annotations

# (language, query, passages). The first passage of each entry answers the query.
TOPICS: list[tuple[str, str, list[str]]] = [
    (
        "en",
        "How do vaccines train the immune system?",
        [
            "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen, "
            "so that B cells and T cells learn to recognise it and memory cells remain afterwards.",
            "The Great Barrier Reef is the largest coral reef system in the world, stretching over "
            "2,300 kilometres along the coast of Queensland, Australia.",
            "Compound interest means that interest is earned on previously earned interest as well "
            "as on the principal.",
        ],
    ),
    (
        "de",
        "Wann wurde die Berliner Mauer gebaut?",
        [
            "Die Berliner Mauer wurde am 13. August 1961 von der DDR errichtet und fiel am "
            "9. November 1989 nach friedlichen Protesten.",
            "Der Rhein ist mit etwa 1.230 Kilometern einer der längsten Flüsse Europas.",
            "Sauerteigbrot braucht Zeit: der Teig gärt oft zwölf Stunden oder länger.",
        ],
    ),
    (
        "fr",
        "Quelle est la capitale de l'Australie ?",
        [
            "Canberra est la capitale de l'Australie ; elle a été choisie en 1908 comme compromis "
            "entre Sydney et Melbourne.",
            "La tour Eiffel a été construite pour l'Exposition universelle de 1889 à Paris.",
            "Le camembert est un fromage à pâte molle originaire de Normandie.",
        ],
    ),
    (
        "es",
        "¿Cómo funciona la fotosíntesis?",
        [
            "La fotosíntesis convierte la luz solar, el agua y el dióxido de carbono en glucosa y "
            "oxígeno dentro de los cloroplastos de las plantas.",
            "El flamenco es un arte andaluz que combina cante, toque y baile.",
            "Madrid está situada en el centro de la península ibérica, a 650 metros de altitud.",
        ],
    ),
    (
        "zh",
        "长城有多长？",
        [
            "根据2012年的测量，明长城全长约8851.8公里，而历代长城的总长度超过两万一千公里。",
            "熊猫主要生活在中国四川、陕西和甘肃的山区，以竹子为主要食物。",
            "上海是中国最大的城市之一，也是重要的国际金融中心。",
        ],
    ),
    (
        "ja",
        "富士山の高さはどれくらいですか？",
        [
            "富士山は標高3776メートルで、日本で最も高い山です。静岡県と山梨県にまたがっています。",
            "寿司は酢飯と魚介類を組み合わせた日本の伝統的な料理です。",
            "東京の地下鉄は世界で最も利用者が多い鉄道網の一つです。",
        ],
    ),
    (
        "ko",
        "한글은 누가 만들었나요?",
        [
            "한글은 1443년 조선의 세종대왕이 백성들이 쉽게 글을 읽고 쓸 수 있도록 창제하였다.",
            "김치는 배추와 고춧가루로 만드는 한국의 대표적인 발효 음식이다.",
            "서울은 대한민국의 수도이며 한강이 도시를 가로질러 흐른다.",
        ],
    ),
    (
        "ar",
        "ما هي عاصمة مصر؟",
        [
            "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها، وتقع على ضفاف نهر النيل.",
            "الخط العربي فن تشكيلي يعتمد على جمال الحروف وتناسقها.",
            "تعد الصحراء الكبرى أكبر صحراء حارة في العالم.",
        ],
    ),
    (
        "ru",
        "Кто написал роман «Война и мир»?",
        [
            "Роман «Война и мир» написал Лев Николаевич Толстой; он публиковался с 1865 по 1869 год.",
            "Байкал — самое глубокое озеро на планете, его глубина достигает 1642 метров.",
            "Московский метрополитен открылся в 1935 году.",
        ],
    ),
    (
        "hi",
        "ताजमहल किसने बनवाया था?",
        [
            "ताजमहल को मुग़ल बादशाह शाहजहाँ ने अपनी पत्नी मुमताज़ महल की याद में आगरा में बनवाया था।",
            "गंगा नदी भारत की सबसे पवित्र नदियों में से एक मानी जाती है।",
            "क्रिकेट भारत में सबसे लोकप्रिय खेल है।",
        ],
    ),
    (
        "el",
        "Πότε έγιναν οι πρώτοι σύγχρονοι Ολυμπιακοί Αγώνες;",
        [
            "Οι πρώτοι σύγχρονοι Ολυμπιακοί Αγώνες διεξήχθησαν στην Αθήνα το 1896.",
            "Η Ακρόπολη των Αθηνών είναι ένας αρχαίος ακρόπολη πάνω σε βραχώδη λόφο.",
            "Το ελαιόλαδο είναι βασικό συστατικό της μεσογειακής διατροφής.",
        ],
    ),
    (
        "th",
        "กรุงเทพมหานครก่อตั้งเมื่อใด",
        [
            "กรุงเทพมหานครได้รับการสถาปนาเป็นราชธานีเมื่อ พ.ศ. 2325 โดยพระบาทสมเด็จพระพุทธยอดฟ้าจุฬาโลก",
            "ต้มยำกุ้งเป็นอาหารไทยที่มีรสเปรี้ยวและเผ็ด",
            "ช้างเป็นสัตว์ประจำชาติของประเทศไทย",
        ],
    ),
    (
        "emoji",
        "best pizza 🍕 in Naples 🇮🇹?",
        [
            "🍕 Pizza Margherita was born in Naples in 1889 🇮🇹 — tomato 🍅, mozzarella 🧀 and basil 🌿.",
            "🚀 Rockets need about 7.8 km/s to reach low Earth orbit 🌍.",
            "☕ Coffee ☕ before 10am ⏰ keeps me going 💪😀",
        ],
    ),
    (
        "code",
        "python function to reverse a list",
        [
            "def reverse(items: list) -> list:\n    return items[::-1]  # slicing with a negative step",
            "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 10;",
            "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
        ],
    ),
    (
        "numbers",
        "What is 3.14159 × 2?",
        [
            "2 × 3.14159 = 6.28318, which is approximately τ (tau) to five decimal places.",
            "Order #4471-2290 shipped on 2024-03-17 at 08:45 UTC, weight 12.5 kg.",
            "ISBN 978-3-16-148410-0; tel. +1 (555) 010-9999; version 2.51.0.",
        ],
    ),
]

LANGUAGES: tuple[str, ...] = tuple(lang for lang, _, _ in TOPICS)


def corpus_lines() -> list[str]:
    """Every query and passage, one per line (training text for a stand-in tokenizer)."""
    lines: list[str] = []
    for _, query, passages in TOPICS:
        lines.append(query)
        lines.extend(passages)
    return lines


def long_passage(paragraphs: int, offset: int = 0) -> str:
    """A passage made of many paragraphs from different languages; long enough to truncate."""
    all_passages = [p for _, _, ps in TOPICS for p in ps]
    return " ".join(all_passages[(offset + i) % len(all_passages)] for i in range(paragraphs))


def pairs() -> list[tuple[str, str]]:
    """Query/passage pairs of mixed length: short, medium, long and over-long."""
    out: list[tuple[str, str]] = [("2+2?", "4"), ("猫", "猫は動物"), ("Москва?", "Да."), ("hi", "👋")]
    for i, (_, query, passages) in enumerate(TOPICS):
        out.extend((query, p) for p in passages)
        out.append((query, long_passage(2 + i % 4, offset=i)))  # medium
    out.append((TOPICS[0][1], long_passage(12)))  # a few hundred tokens
    out.append((TOPICS[4][1], long_passage(40, offset=3)))  # longer than any max_length here
    out.append((TOPICS[7][1], long_passage(80, offset=5)))  # ~8k+ characters
    # A query long enough to be cut at 3/4 of max_length (FlagReranker semantics).
    out.append((long_passage(30, offset=7), TOPICS[2][2][0]))
    return out


def hundred_passages() -> tuple[str, list[str]]:
    """One query and 100 candidate passages, for the top-10 agreement check."""
    all_passages = [p for _, _, ps in TOPICS for p in ps]
    query = TOPICS[0][1]
    candidates = []
    for i in range(100):
        n = 1 + (i % 5)
        candidates.append(" ".join(all_passages[(i * 7 + k) % len(all_passages)] for k in range(n)))
    return query, candidates

"""Held-out multilingual query/passage texts for the parity certificate.

These pairs exist only to certify that an exported BAAI bge-reranker-v2-m3 scores like the
reference model. They were never used to choose fp16 ranges, to calibrate anything, or to
tune any threshold: the calibration set lives in common/calibration_texts.py, and this module
deliberately shares none of its topics or sentences, so the certificate measures held-out text.

The text is real, natural prose in many scripts (Latin, Cyrillic, Greek, Arabic, Hebrew,
Persian, Urdu, Devanagari, Bengali, Tamil, Thai, Han, Kana, Hangul), plus one programming
entry and one code-switching entry with emoji, numbers and URLs. Everything is deterministic.
"""

from __future__ import annotations

# (language, query, passages). The first passage answers the query; the other two are
# plausible distractors on unrelated topics. No two entries share a query topic.
TOPICS: list[tuple[str, str, list[str]]] = [
    (
        "en",
        "What does insulin do in the body?",
        [
            "Insulin is a hormone made by the beta cells of the pancreas. It lets muscle, fat and "
            "liver cells take up glucose from the blood, which lowers the blood sugar level.",
            "The Panama Canal opened in 1914 and lets ships cross between the Atlantic and the "
            "Pacific without sailing around South America.",
            "A marathon is 42.195 kilometres long, a distance that was fixed as the official standard in 1921.",
        ],
    ),
    (
        "de",
        "Ab welchem Alter darf man bei der Bundestagswahl wählen?",
        [
            "Wahlberechtigt ist, wer am Wahltag das 18. Lebensjahr vollendet hat. So steht es in "
            "Artikel 38 des Grundgesetzes.",
            "Die Zugspitze ist mit 2.962 Metern der höchste Berg Deutschlands.",
            "Für Spätzle verrührt man Mehl, Eier, Salz und etwas Wasser zu einem zähen Teig und "
            "schabt ihn direkt ins kochende Wasser.",
        ],
    ),
    (
        "fr",
        "Quand a eu lieu la prise de la Bastille ?",
        [
            "La Bastille, forteresse servant de prison royale à Paris, a été prise par les "
            "insurgés le 14 juillet 1789. Cet événement est commémoré chaque année lors de la "
            "fête nationale.",
            "Le mont Blanc culmine à environ 4 805 mètres, ce qui en fait le plus haut sommet des Alpes.",
            "Le Tour de France cycliste a été créé en 1903 par le journal L'Auto.",
        ],
    ),
    (
        "es",
        "¿Cuál es el río más largo de Sudamérica?",
        [
            "El Amazonas es el río más largo de Sudamérica y el más caudaloso del mundo. Nace en "
            "los Andes peruanos y desemboca en el océano Atlántico, en el norte de Brasil.",
            "La paella valenciana tradicional lleva arroz, pollo, conejo, judías verdes, garrofón y azafrán.",
            "El Código Civil español se promulgó en 1889 y sigue vigente, aunque con muchas reformas.",
        ],
    ),
    (
        "pt",
        "Como se faz o pastel de nata?",
        [
            "O pastel de nata faz-se com massa folhada recheada com um creme de gemas, leite, "
            "açúcar e farinha, e coze em forno muito quente até a superfície ficar caramelizada.",
            "O Brasil ganhou cinco Copas do Mundo de futebol: em 1958, 1962, 1970, 1994 e 2002.",
            "Grande parte de Lisboa foi destruída pelo terramoto de 1 de novembro de 1755.",
        ],
    ),
    (
        "it",
        "Chi ha inventato la pila elettrica?",
        [
            "Alessandro Volta costruì la prima pila elettrica nel 1799, impilando dischi di zinco "
            "e di rame separati da panni imbevuti di acqua salata, e la descrisse alla Royal "
            "Society nel 1800.",
            "Il risotto alla milanese deve il suo colore giallo allo zafferano.",
            "L'Etna, in Sicilia, è il vulcano attivo più alto d'Europa.",
        ],
    ),
    (
        "nl",
        "Wat zijn de Deltawerken?",
        [
            "De Deltawerken zijn een reeks dammen, sluizen en stormvloedkeringen in Zeeland en "
            "Zuid-Holland. Ze zijn gebouwd na de watersnoodramp van 1953 om het land tegen de zee "
            "te beschermen.",
            "Voor stamppot worden aardappelen samen met groente zoals boerenkool of zuurkool "
            "gestampt, vaak met een rookworst erbij.",
            "De Elfstedentocht is een schaatstocht van bijna 200 kilometer langs de elf Friese steden.",
        ],
    ),
    (
        "pl",
        "Za co Maria Skłodowska-Curie otrzymała Nagrodę Nobla z chemii?",
        [
            "W 1911 roku Maria Skłodowska-Curie otrzymała Nagrodę Nobla z chemii za odkrycie "
            "polonu i radu oraz wyodrębnienie czystego radu.",
            "Pierogi ruskie nadziewa się farszem z ziemniaków, twarogu i smażonej cebuli.",
            "Wisła jest najdłuższą rzeką Polski i ma ponad tysiąc kilometrów długości.",
        ],
    ),
    (
        "tr",
        "İstanbul ne zaman fethedildi?",
        [
            "İstanbul, Osmanlı padişahı II. Mehmed tarafından 29 Mayıs 1453'te fethedildi ve bu "
            "olay Bizans İmparatorluğu'nun sonunu getirdi.",
            "Kapadokya, peri bacaları denilen volkanik kaya oluşumlarıyla ünlüdür.",
            "Kırkpınar Yağlı Güreşleri her yaz Edirne'de düzenlenir.",
        ],
    ),
    (
        "ru",
        "Что такое вечная мерзлота?",
        [
            "Вечная мерзлота — это грунт, который остаётся при температуре ниже нуля не менее "
            "двух лет подряд. Она занимает около двух третей территории России.",
            "Борщ варят из свёклы, капусты, картофеля и мяса, а подают со сметаной.",
            "Гроссмейстер — высшее шахматное звание, которое присваивает ФИДЕ.",
        ],
    ),
    (
        "uk",
        "Як утворюються сталактити?",
        [
            "Сталактити утворюються, коли вода з розчиненим карбонатом кальцію крапає зі стелі "
            "печери: вуглекислий газ виходить з води, і кальцит поступово осідає, нарощуючи "
            "кам'яну бурульку.",
            "Вареники з вишнями — традиційна літня страва української кухні.",
            "Дніпро — найдовша річка України, що впадає в Чорне море.",
        ],
    ),
    (
        "ar",
        "من هو ابن سينا؟",
        [
            "ابن سينا طبيب وفيلسوف فارسي عاش بين عامي 980 و1037 للميلاد، وظلّ كتابه «القانون في "
            "الطب» مرجعاً لتعليم الطب في أوروبا عدة قرون.",
            "يُحضَّر الحمص بالطحينة من الحمص المسلوق المهروس مع الطحينة وعصير الليمون والثوم.",
            "يبلغ ارتفاع برج خليفة في دبي 828 متراً، وهو أعلى مبنى في العالم.",
        ],
    ),
    (
        "he",
        "למה קשה לטבוע בים המלח?",
        [
            "מליחות המים בים המלח גבוהה כמעט פי עשרה מזו של האוקיינוס, ולכן צפיפות המים גבוהה מאוד וגוף האדם צף בקלות.",
            "פלאפל מכינים מחומוס טחון, מתבלים בכוסברה ובכמון ומטגנים בשמן עמוק.",
            "חוק השבות נחקק בכנסת בשנת 1950.",
        ],
    ),
    (
        "fa",
        "فردوسی چه کسی بود؟",
        [
            "ابوالقاسم فردوسی شاعر بزرگ ایرانی است که شاهنامه را در حدود سی سال سرود؛ این حماسه "
            "نزدیک به پنجاه هزار بیت دارد.",
            "قورمه‌سبزی خورشی ایرانی است که با سبزی سرخ‌شده، لوبیا قرمز، گوشت و لیمو عمانی پخته می‌شود.",
            "قله دماوند با حدود ۵۶۱۰ متر ارتفاع، بلندترین کوه ایران است.",
        ],
    ),
    (
        "ur",
        "پاکستان کا موجودہ آئین کب نافذ ہوا؟",
        [
            "پاکستان کا موجودہ آئین اپریل 1973 میں قومی اسمبلی نے منظور کیا اور یہ 14 اگست 1973 کو نافذ ہوا۔",
            "کے ٹو دنیا کی دوسری بلند ترین چوٹی ہے جو پاکستان اور چین کی سرحد پر واقع ہے۔",
            "علامہ محمد اقبال کو پاکستان کا قومی شاعر مانا جاتا ہے۔",
        ],
    ),
    (
        "hi",
        "चंद्रयान-3 चंद्रमा पर कब उतरा?",
        [
            "इसरो का चंद्रयान-3 23 अगस्त 2023 को चंद्रमा के दक्षिणी ध्रुव के पास सफलतापूर्वक उतरा, "
            "और भारत वहाँ उतरने वाला पहला देश बना।",
            "बिरयानी चावल, मसालों और मांस या सब्ज़ियों को परतों में दम पर पकाकर बनाई जाती है।",
            "भारत का संविधान 26 जनवरी 1950 को लागू हुआ था।",
        ],
    ),
    (
        "bn",
        "বাংলাদেশের জাতীয় খেলা কী?",
        [
            "হাডুডু বা কাবাডি বাংলাদেশের জাতীয় খেলা। প্রতি দলের সাতজন খেলোয়াড় মাঠে থাকে, আর "
            "আক্রমণকারী এক দমে প্রতিপক্ষের কোর্টে গিয়ে কাউকে ছুঁয়ে ফিরে আসার চেষ্টা করে।",
            "রবীন্দ্রনাথ ঠাকুর ১৯১৩ সালে গীতাঞ্জলির জন্য সাহিত্যে নোবেল পুরস্কার পান।",
            "সুন্দরবন পৃথিবীর বৃহত্তম ম্যানগ্রোভ বন, যা বাংলাদেশ ও ভারত জুড়ে বিস্তৃত।",
        ],
    ),
    (
        "ta",
        "இட்லி எப்படி தயாரிக்கப்படுகிறது?",
        [
            "அரிசியையும் உளுந்தையும் தனித்தனியாக ஊறவைத்து அரைத்து, மாவை இரவு முழுவதும் "
            "புளிக்கவைத்து, இட்லித் தட்டில் ஆவியில் வேகவைத்தால் இட்லி தயார்.",
            "தஞ்சாவூர் பெரிய கோயில் ராஜராஜ சோழனால் கி.பி. 1010 ஆம் ஆண்டில் கட்டி முடிக்கப்பட்டது.",
            "விஸ்வநாதன் ஆனந்த் ஐந்து முறை உலக சதுரங்க சாம்பியன் பட்டம் வென்றார்.",
        ],
    ),
    (
        "zh",
        "造纸术是谁改进的？",
        [
            "东汉的蔡伦在公元105年前后改进了造纸术，他用树皮、麻头、破布和旧渔网造纸，大大降低了纸的成本。",
            "乒乓球在中国被称为“国球”，中国队长期在世界大赛中保持优势。",
            "杭州西湖于2011年被列入《世界遗产名录》。",
        ],
    ),
    (
        "ja",
        "地震の震度とマグニチュードの違いは何ですか？",
        [
            "マグニチュードは地震そのものの規模（エネルギー）を表し、震度はそれぞれの場所での揺れの強さを表します。"
            "気象庁の震度階級は0から7までの10段階です。",
            "味噌汁は、だしに味噌を溶き、豆腐やわかめなどの具を入れて作ります。",
            "大相撲の本場所は年に6回、それぞれ15日間行われます。",
        ],
    ),
    (
        "ko",
        "거북선은 누가 만들었나요?",
        [
            "거북선은 조선 수군의 돌격선으로, 이순신 장군이 임진왜란 직전에 개량해 1592년 실전에 투입했다. "
            "배 윗부분을 덮개로 씌우고 쇠못을 꽂아 적이 올라타지 못하게 했다.",
            "제주도는 한국에서 가장 큰 섬이며 섬 한가운데에 한라산이 솟아 있다.",
            "된장찌개는 된장을 풀고 두부, 애호박, 감자 등을 넣어 끓인 찌개이다.",
        ],
    ),
    (
        "th",
        "มวยไทยใช้อวัยวะใดในการต่อสู้",
        [
            "มวยไทยได้ชื่อว่าเป็นศาสตร์แห่งอวัยวะทั้งแปด เพราะนักมวยใช้หมัด ศอก เข่า และเท้าทั้งสองข้าง รวมแปดจุดในการออกอาวุธ",
            "ส้มตำทำจากมะละกอดิบขูดเป็นเส้น ตำกับพริก กระเทียม มะนาว และน้ำปลา",
            "ดอยอินทนนท์ในจังหวัดเชียงใหม่เป็นยอดเขาที่สูงที่สุดในประเทศไทย",
        ],
    ),
    (
        "vi",
        "Vịnh Hạ Long nằm ở đâu?",
        [
            "Vịnh Hạ Long nằm ở tỉnh Quảng Ninh, phía đông bắc Việt Nam, với gần 2.000 hòn đảo đá "
            "vôi. Vịnh được UNESCO công nhận là Di sản Thiên nhiên Thế giới năm 1994.",
            "Phở bò được nấu với nước dùng từ xương bò hầm lâu cùng quế, hồi và gừng nướng.",
            "Chiến thắng Điện Biên Phủ năm 1954 dẫn tới Hiệp định Genève về Đông Dương.",
        ],
    ),
    (
        "id",
        "Kapan Indonesia memproklamasikan kemerdekaannya?",
        [
            "Soekarno dan Mohammad Hatta memproklamasikan kemerdekaan Indonesia pada 17 Agustus "
            "1945 di Jalan Pegangsaan Timur 56, Jakarta.",
            "Rendang adalah masakan daging sapi khas Minangkabau yang dimasak lama dengan santan "
            "dan rempah-rempah hingga kering.",
            "Bulu tangkis adalah cabang olahraga yang paling banyak menyumbang medali emas Olimpiade bagi Indonesia.",
        ],
    ),
    (
        "sw",
        "Mlima Kilimanjaro una urefu gani?",
        [
            "Mlima Kilimanjaro ulioko kaskazini mwa Tanzania una urefu wa mita 5,895 juu ya usawa "
            "wa bahari, na ndio mlima mrefu zaidi barani Afrika.",
            "Ugali hupikwa kwa kuchanganya unga wa mahindi na maji yanayochemka hadi uwe mzito.",
            "Wakimbiaji wa Kenya na Ethiopia wameshinda mbio nyingi kubwa za marathoni duniani.",
        ],
    ),
    (
        "el",
        "Τι είναι ο μηχανισμός των Αντικυθήρων;",
        [
            "Ο μηχανισμός των Αντικυθήρων είναι ένας αρχαίος ελληνικός αναλογικός υπολογιστής με "
            "χάλκινα γρανάζια. Ανασύρθηκε από ναυάγιο το 1901 και υπολόγιζε τις θέσεις του Ήλιου "
            "και της Σελήνης, καθώς και τις εκλείψεις.",
            "Ο μουσακάς φτιάχνεται με στρώσεις μελιτζάνας, κιμά και μπεσαμέλ.",
            "Η Κρήτη είναι το μεγαλύτερο νησί της Ελλάδας.",
        ],
    ),
    (
        "cs",
        "Kdo vymyslel slovo robot?",
        [
            "Slovo „robot“ poprvé použil Karel Čapek ve hře R.U.R. z roku 1920, ale vymyslel ho "
            "jeho bratr Josef Čapek.",
            "Svíčková na smetaně se podává s houskovým knedlíkem a brusinkami.",
            "Stavbu Karlova mostu v Praze zahájil Petr Parléř v roce 1357.",
        ],
    ),
    (
        "code",
        "How do I read a file line by line in Python?",
        [
            'with open("data.txt", encoding="utf-8") as f:\n'
            "    for line in f:  # the file object yields one line at a time\n"
            '        print(line.rstrip("\\n"))',
            'const res = await fetch("/api/users");\nconst users = await res.json();\nconsole.log(users.length);',
            "git rebase -i HEAD~3   # then mark the last two commits as 'squash'",
        ],
    ),
    (
        "mixed",
        "wie lange muss ich ein Ei kochen 🥚 für soft-boiled? like 6 min?",
        [
            "Für ein weiches Ei 🥚: direkt ins kochende Wasser, ca. 6–7 min (Größe M, aus dem "
            "Kühlschrank), dann kalt abschrecken ❄️. Mehr Tipps: https://example.org/eier-kochen",
            "Deadline fürs Q3 report ist der 30.09. 📅 pls upload nach https://intranet.example.com/reports, danke 🙏",
            "ICE 578 🚄 ab Berlin Hbf 14:32, an München Hbf 18:55, Gleis 7, Wagen 21 — seat 45 is mine 😅",
        ],
    ),
]

LANGUAGES: tuple[str, ...] = tuple(lang for lang, _, _ in TOPICS)


def _all_passages() -> list[str]:
    return [p for _, _, ps in TOPICS for p in ps]


def long_passage(paragraphs: int, offset: int = 0) -> str:
    """`paragraphs` passages of TOPICS (all languages, rotating from `offset`) joined by spaces."""
    all_passages = _all_passages()
    return " ".join(all_passages[(offset + i) % len(all_passages)] for i in range(paragraphs))


RANKING_QUERY_LANGUAGE = "en"
RANKING_QUERY = "How does a rainbow form?"

# (grade, passage): 3 = answers the query directly, 2 = explains a closely related part,
# 1 = same physics but only loosely related, 0 = lexical trap ("rainbow" but off-topic).
_RAINBOW_PASSAGES: list[tuple[int, str]] = [
    (
        3,
        "A rainbow forms when sunlight enters raindrops: the light is refracted as it enters "
        "a drop, reflected off the back of the drop and refracted again as it leaves. Each "
        "wavelength bends by a slightly different amount, so white light is spread into an "
        "arc of colours about 42 degrees from the point directly opposite the sun.",
    ),
    (
        3,
        "Ein Regenbogen entsteht, wenn Sonnenlicht in Regentropfen gebrochen, an ihrer "
        "Rückseite reflektiert und beim Austritt erneut gebrochen wird; dabei wird das weiße "
        "Licht in seine Spektralfarben zerlegt.",
    ),
    (
        3,
        "To see a rainbow the sun has to be behind you and rain or spray in front of you. "
        "Each colour reaches your eye from drops at a slightly different angle, which is why "
        "red sits on the outer edge of the bow and violet on the inner edge.",
    ),
    (
        2,
        "El arcoíris aparece cuando la luz del sol atraviesa gotas de lluvia que actúan como "
        "pequeños prismas y separan la luz en colores.",
    ),
    (
        2,
        "A double rainbow appears when light is reflected twice inside each raindrop. The "
        "second, fainter bow lies at about 51 degrees and its colours are reversed, with red "
        "on the inside.",
    ),
    (
        2,
        "Fogbows form in fog or mist, where the droplets are so small that diffraction blurs "
        "the colours together and leaves an almost white arc.",
    ),
    (
        1,
        "Dispersion is why a glass prism splits white light into a spectrum: the refractive "
        "index of glass is higher for violet light than for red light.",
    ),
    (
        1,
        "Snell's law relates the angles of incidence and refraction to the refractive indices "
        "of two media: n1 sin θ1 = n2 sin θ2.",
    ),
    (
        1,
        "In the 1660s Isaac Newton used prisms to show that white light is a mixture of "
        "colours, and he named seven of them: red, orange, yellow, green, blue, indigo and "
        "violet.",
    ),
    (
        1,
        "Sun dogs are bright spots on either side of the sun, caused by sunlight refracting "
        "through flat hexagonal ice crystals in high cirrus clouds.",
    ),
    (
        1,
        "The sky looks blue because air molecules scatter the short blue wavelengths of "
        "sunlight much more strongly than the long red ones (Rayleigh scattering).",
    ),
    (
        0,
        "Rainbow trout are a cold-water fish native to the rivers of western North America, "
        "named for the pink band along their sides.",
    ),
    (
        0,
        "A rainbow table is a precomputed table of hash values used to crack password hashes; "
        "salting each password defeats it.",
    ),
]


def _ranking() -> list[tuple[int, str]]:
    all_passages = _all_passages()
    n_other = 100 - len(_RAINBOW_PASSAGES)
    others = []
    for j in range(n_other):
        n = 1 + j % 4  # 1 to 4 passages joined, so lengths vary
        start = (j * 5) % len(all_passages)
        others.append(" ".join(all_passages[(start + k) % len(all_passages)] for k in range(n)))
    out: list[tuple[int, str]] = [(0, p) for p in others]
    # Spread the rainbow passages through the list at fixed positions.
    for i, item in enumerate(_RAINBOW_PASSAGES):
        out.insert(3 + i * 7, item)
    return out


def ranking_list() -> tuple[str, list[str]]:
    """One English query and exactly 100 distinct candidate passages (deterministic)."""
    return RANKING_QUERY, [p for _, p in _ranking()]


def ranking_grades() -> list[int]:
    """Graded relevance (0-3) of each candidate of ranking_list(), in the same order."""
    return [g for g, _ in _ranking()]

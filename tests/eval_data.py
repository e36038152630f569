"""A small multilingual dataset in the BEIR layout, written by the evaluation tests.

Ten languages and scripts (spaced and unspaced), graded qrels (2 = answers, 1 = on topic),
distractors that share words with the queries (so BM25 returns more than the relevant
documents), titles on some documents, one long document past max_length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

# (query id, query, [(doc id, title, text, grade)]) ; grade 0 = distractor, not in qrels
TOPICS: List[Tuple[str, str, List[Tuple[str, str, str, int]]]] = [
    (
        "q-en",
        "How tall is Mount Everest?",
        [
            ("d-en-1", "Mount Everest", "Mount Everest is 8,849 metres tall, the highest mountain above sea level.", 2),
            ("d-en-2", "", "Everest lies in the Mahalangur range of the Himalayas between Nepal and China.", 1),
            ("d-en-3", "", "The tallest building in the world is the Burj Khalifa in Dubai.", 0),
            ("d-en-4", "Mountains", "Mount Kilimanjaro is the tallest mountain in Africa. " * 60, 0),
        ],
    ),
    (
        "q-de",
        "Wie hoch ist die Zugspitze?",
        [
            ("d-de-1", "Zugspitze", "Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands.", 2),
            ("d-de-2", "", "Auf die Zugspitze fahren eine Zahnradbahn und mehrere Seilbahnen.", 1),
            ("d-de-3", "", "Wie hoch ist die Miete in München? Die Preise steigen jedes Jahr.", 0),
        ],
    ),
    (
        "q-fr",
        "Quelle est la capitale de la France ?",
        [
            ("d-fr-1", "Paris", "Paris est la capitale de la France et sa plus grande ville.", 2),
            (
                "d-fr-2",
                "",
                "La France est un pays d'Europe de l'Ouest dont la capitale compte deux millions d'habitants.",
                1,
            ),
            ("d-fr-3", "", "Lyon est la troisième ville de France, célèbre pour sa cuisine.", 0),
        ],
    ),
    (
        "q-es",
        "¿Cuál es el río más largo de España?",
        [
            ("d-es-1", "", "El Tajo es el río más largo de la península ibérica, con 1007 kilómetros.", 2),
            ("d-es-2", "Ebro", "El Ebro es el río más caudaloso de España.", 1),
            ("d-es-3", "", "España tiene playas largas en el Mediterráneo.", 0),
        ],
    ),
    (
        "q-zh",
        "长城有多长？",
        [
            ("d-zh-1", "长城", "长城全长两万一千多公里，是世界上最长的建筑。", 2),
            ("d-zh-2", "", "长城始建于春秋战国时期，明朝进行了大规模修建。", 1),
            ("d-zh-3", "", "长江是中国最长的河流，全长六千三百公里。", 0),
        ],
    ),
    (
        "q-ja",
        "富士山の高さは？",
        [
            ("d-ja-1", "富士山", "富士山の高さは3776メートルで、日本で最も高い山です。", 2),
            ("d-ja-2", "", "富士山は静岡県と山梨県にまたがる活火山です。", 1),
            ("d-ja-3", "", "東京タワーの高さは333メートルです。", 0),
        ],
    ),
    (
        "q-ru",
        "Какая самая длинная река в России?",
        [
            ("d-ru-1", "", "Самая длинная река в России — Обь вместе с Иртышом, около 5400 километров.", 2),
            ("d-ru-2", "Енисей", "Енисей — одна из крупнейших рек России и мира.", 1),
            ("d-ru-3", "", "Москва — самый большой город России.", 0),
        ],
    ),
    (
        "q-ar",
        "ما هي عاصمة مصر؟",
        [
            ("d-ar-1", "", "القاهرة هي عاصمة مصر وأكبر مدنها.", 2),
            ("d-ar-2", "", "تقع مصر في شمال شرق أفريقيا ويمر بها نهر النيل.", 1),
            ("d-ar-3", "", "الرياض هي عاصمة المملكة العربية السعودية.", 0),
        ],
    ),
    (
        "q-hi",
        "भारत की राजधानी क्या है?",
        [
            ("d-hi-1", "", "नई दिल्ली भारत की राजधानी है।", 2),
            ("d-hi-2", "", "भारत दक्षिण एशिया का एक विशाल देश है।", 1),
            ("d-hi-3", "", "मुंबई भारत का सबसे बड़ा शहर है।", 0),
        ],
    ),
    (
        "q-ko",
        "한국의 수도는 어디입니까?",
        [
            ("d-ko-1", "서울", "서울은 대한민국의 수도이자 최대 도시입니다.", 2),
            ("d-ko-2", "", "한국은 동아시아의 한반도에 있는 나라입니다.", 1),
            ("d-ko-3", "", "부산은 한국의 제2의 도시입니다.", 0),
        ],
    ),
]


def write(root: Path, split: str = "test", topics=TOPICS, extra_docs=(), extra_qrels=(), skip=()) -> Path:
    """Write corpus.jsonl, queries.jsonl and qrels/<split>.tsv under root; `skip` names files not
    to write (bad-input tests), `extra_docs` adds (id, title, text), `extra_qrels` (qid, did, grade)."""
    root.mkdir(parents=True, exist_ok=True)
    corpus = [{"_id": d, "title": t, "text": x} for _, _, docs in topics for d, t, x, _ in docs]
    corpus += [{"_id": d, "title": t, "text": x} for d, t, x in extra_docs]
    queries = [{"_id": q, "text": text} for q, text, _ in topics]
    qrels = [(q, d, g) for q, _, docs in topics for d, _, _, g in docs if g > 0] + list(extra_qrels)
    if "corpus.jsonl" not in skip:
        (root / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus), "utf-8")
    if "queries.jsonl" not in skip:
        (root / "queries.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in queries), "utf-8")
    if "qrels" not in skip:
        (root / "qrels").mkdir(exist_ok=True)
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels), "utf-8"
        )
    return root


def qrels(topics=TOPICS) -> Dict[str, Dict[str, int]]:
    return {q: {d: g for d, _, _, g in docs if g > 0} for q, _, docs in topics}


def texts(topics=TOPICS) -> Dict[str, str]:
    """Document texts as BEIR and MTEB build them: title and text joined by a space."""
    return {d: (f"{t} {x}".strip() if t.strip() else x.strip()) for _, _, docs in topics for d, t, x, _ in docs}


def queries(topics=TOPICS) -> Dict[str, str]:
    return {q: text for q, text, _ in topics}


def all_docs_run(topics=TOPICS) -> Dict[str, Dict[str, float]]:
    """Every document of a topic as that query's candidates, in file order (scores descending)."""
    return {q: {d: float(len(docs) - i) for i, (d, _, _, _) in enumerate(docs)} for q, _, docs in topics}


def write_run(path: Path, run: Dict[str, Dict[str, float]], tag: str = "test") -> Path:
    lines = []
    for q, docs in run.items():
        for rank, (d, s) in enumerate(sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True), 1):
            lines.append(f"{q} Q0 {d} {rank} {s} {tag}\n")
    path.write_text("".join(lines), "utf-8")
    return path


def write_conventions_set(root: Path) -> Tuple[Path, Dict[str, Dict[str, float]]]:
    """The synthetic set plus what BEIR's and MTEB's conventions disagree with a naive evaluator
    on, and a first-stage run over it:

    - self-ids (ArguAna/Quora style): query `d-de-2` is also a document and is its own first
      candidate; query `d-ru-3`'s only candidate is itself (nothing left once it is removed);
    - a query whose qrels rows are all relevance 0 (`q-zero`);
    - a document id on two lines of corpus.jsonl (`d-es-2`: the copies' texts differ) and
      `d-ko-3` twice with the same text.
    """
    extra_docs = [
        ("d-es-2", "", "El Tajo nace en la sierra de Albarracín y desemboca en Lisboa."),  # the copy read
        ("d-ko-3", "", "부산은 한국의 제2의 도시입니다."),
    ]
    self_queries = [("d-de-2", "Welche Bahnen fahren auf die Zugspitze?"), ("d-ru-3", "Какой город самый большой?")]
    extra_qrels = [
        ("d-de-2", "d-de-1", 1),
        ("d-de-2", "d-de-2", 2),  # judged relevant to itself: removed all the same, as BEIR does
        ("d-ru-3", "d-ru-1", 1),
        ("q-zero", "d-fr-3", 0),
        ("q-zero", "d-fr-1", 0),
    ]
    write(root, extra_docs=extra_docs, extra_qrels=extra_qrels)
    with (root / "queries.jsonl").open("a", encoding="utf-8") as handle:
        for qid, text in self_queries + [("q-zero", "Quelle est la plus grande ville de France ?")]:
            handle.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    run = all_docs_run()
    run["d-de-2"] = {"d-de-2": 9.0, "d-de-3": 3.0, "d-de-1": 2.0}
    run["d-ru-3"] = {"d-ru-3": 5.0}
    run["q-zero"] = {"d-fr-1": 3.0, "d-fr-2": 2.0, "d-fr-3": 1.0}
    run["q-es"]["d-es-2"] = 10.0  # the duplicated document ranked first by the first stage
    return root, run

# ruff: noqa: E501  (corpus frames and hand-written lines are data, one per line)
"""Writes the PII filter's corpus, ``serving/safety/corpus/pii/{train,test}.jsonl``.

    .venv/bin/python hack/pii_corpus.py        # rewrites both splits (deterministic)

The sentences are the project's own, written for this corpus in English, Spanish, German and
French as users write to a chat assistant and as an assistant answers; the personal data in them is
made up here: check digits are computed (Luhn for cards and IMEIs, ISO 7064 mod-97 for IBANs), phone
numbers follow each country's published numbering plan, names are drawn from lists written here.
Train and test never share a sentence frame: every frame belongs to one split (every third frame of
each list goes to test), and the values are drawn from separate random streams, so no line or near
copy of a line is in both. ``serving/safety/corpus/pii/README.md`` gives the label rules.

Each line: ``{"text", "labels": [entities], "values": [the exact substrings], "lang",
"direction", "note"}``; ``labels`` empty for a hard negative, whose ``note`` says what it is.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "serving" / "safety" / "corpus" / "pii"

# ---------------------------------------------------------------------------------------------
# Values


def luhn_digit(body: str) -> str:
    """The Luhn check digit that makes ``body + digit`` valid."""
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


def group(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for size in sizes:
        parts.append(digits[i : i + size])
        i += size
    if i < len(digits):
        parts.append(digits[i:])
    return sep.join(p for p in parts if p)


CARD_BRANDS = (
    ("4", 16),
    ("4", 16),
    ("4", 13),
    ("51", 16),
    ("53", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("2345", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("645", 16),
    ("65", 16),
    ("3530", 16),
    ("3566", 16),
    ("62", 16),
    ("36", 14),
    ("301", 14),
    ("4", 19),
)


def card(rng: random.Random, valid: bool = True) -> str:
    prefix, length = rng.choice(CARD_BRANDS)
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    digits = body + check
    style = rng.random()
    if length == 15:
        return group(digits, (4, 6, 5), rng.choice((" ", "-"))) if style < 0.7 else digits
    if length == 13:
        return group(digits, (4, 3, 3, 3), " ") if style < 0.5 else digits
    if length == 14:
        return group(digits, (4, 6, 4), " ") if style < 0.5 else digits
    if style < 0.55:
        return group(digits, (4, 4, 4, 4), " ")
    if style < 0.8:
        return group(digits, (4, 4, 4, 4), "-")
    return digits


def imei(rng: random.Random) -> str:
    tac = rng.choice(("35", "86", "01", "99")) + "".join(rng.choice(string.digits) for _ in range(6))
    body = tac + "".join(rng.choice(string.digits) for _ in range(6))
    return body + luhn_digit(body)


IBAN_FORMATS = {
    # country: (BBAN length, BBAN alphabet pattern: d digit, a letter, x either)
    "DE": "d" * 18,
    "GB": "aaaa" + "d" * 14,
    "FR": "d" * 23,
    "ES": "d" * 20,
    "IT": "a" + "d" * 10 + "d" * 12,
    "NL": "aaaa" + "d" * 10,
    "BE": "d" * 12,
    "AT": "d" * 16,
    "CH": "d" * 17,
    "IE": "aaaa" + "d" * 14,
}


def _mod97(text: str) -> int:
    return int("".join(str(int(c, 36)) for c in text)) % 97


def iban(rng: random.Random, valid: bool = True, country: str | None = None) -> str:
    country = country or rng.choice(list(IBAN_FORMATS))
    bban = "".join(
        rng.choice(string.ascii_uppercase) if kind == "a" else rng.choice(string.digits)
        for kind in IBAN_FORMATS[country]
    )
    check = 98 - _mod97(bban + country + "00")
    if not valid:
        check = (check + rng.randint(1, 90)) % 97 + 2
        if 98 - _mod97(bban + country + "00") == check:
            check = check + 1 if check < 98 else 2
    compact = f"{country}{check:02d}{bban}"
    return group(compact, (4,) * 9, " ") if rng.random() < 0.7 else compact


def ssn(rng: random.Random, valid: bool = True, sep: str = "-") -> str:
    if valid:
        area = rng.choice([a for a in range(1, 900) if a != 666])
        grp, serial = rng.randint(1, 99), rng.randint(1, 9999)
    else:
        kind = rng.randrange(5)
        area = (0, 666, rng.randint(900, 999), rng.randint(1, 665), rng.randint(1, 665))[kind]
        grp = 0 if kind == 3 else rng.randint(1, 99)
        serial = 0 if kind == 4 else rng.randint(1, 9999)
    return f"{area:03d}{sep}{grp:02d}{sep}{serial:04d}"


def ipv4(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind == 1:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return ".".join(str(rng.randint(1, 223) if i == 0 else rng.randint(0, 255)) for i in range(4))


def ipv6(rng: random.Random) -> str:
    words = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return "2001:db8::" + ":".join(words[:3])
    return ":".join(words)


def _d(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


US_AREAS = ("212", "415", "312", "617", "206", "303", "512", "305", "404", "702", "213", "646", "718", "503", "919")


def phone(rng: random.Random, region: str) -> str:
    """A number in ``region``'s national (or, now and then, international) format."""
    if region == "US":
        area, exchange, line = rng.choice(US_AREAS), str(rng.randint(2, 9)) + _d(rng, 2), _d(rng, 4)
        return rng.choice(
            (f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}",
             f"+1 {area} {exchange} {line}", f"1-{area}-{exchange}-{line}")
        )  # fmt: skip
    if region == "GB":
        if rng.random() < 0.6:
            number = "07" + str(rng.randint(4, 9)) + _d(rng, 8)
            return rng.choice((f"{number[:5]} {number[5:]}", number, f"+44 {number[1:5]} {number[5:]}"))
        number = "020" + str(rng.choice((3, 7, 8))) + _d(rng, 7)
        return rng.choice((f"{number[:3]} {number[3:7]} {number[7:]}", f"+44 20 {number[3:7]} {number[7:]}"))
    if region == "DE":
        if rng.random() < 0.6:
            number = rng.choice(("0151", "0152", "0160", "0170", "0171", "0176", "0157", "0162")) + _d(rng, 8)
            if number[:4] in ("0160", "0170", "0171"):
                number = number[:11]
            return rng.choice((f"{number[:4]} {number[4:]}", number, f"+49 {number[1:4]} {number[4:]}"))
        area = rng.choice(("030", "040", "089", "069", "0221", "0711"))
        rest = str(rng.randint(2, 9)) + _d(rng, 6 if len(area) == 3 else 5)
        return rng.choice((f"{area} {rest}", f"{area}/{rest}", f"{area}-{rest}", f"+49 {area[1:]} {rest}"))
    if region == "FR":
        number = "0" + rng.choice("1234567") + _d(rng, 8)
        pairs = " ".join(number[i : i + 2] for i in range(0, 10, 2))
        dotted = ".".join(number[i : i + 2] for i in range(0, 10, 2))
        return rng.choice(
            (pairs, pairs, dotted, f"+33 {number[1]} " + " ".join(number[i : i + 2] for i in range(2, 10, 2)))
        )
    if region == "ES":
        number = rng.choice(("6", "7", "91", "93", "95", "96"))
        number += _d(rng, 9 - len(number))
        return rng.choice(
            (f"{number[:3]} {number[3:5]} {number[5:7]} {number[7:]}", f"{number[:3]} {number[3:6]} {number[6:]}",
             number, f"+34 {number[:3]} {number[3:6]} {number[6:]}")
        )  # fmt: skip
    if region == "IT":
        if rng.random() < 0.6:
            number = "3" + rng.choice("234589") + _d(rng, 8)
            return rng.choice((f"{number[:3]} {number[3:6]} {number[6:]}", number, f"+39 {number[:3]} {number[3:]}"))
        number = "06" + _d(rng, 8)
        return rng.choice((f"{number[:2]} {number[2:6]} {number[6:]}", f"+39 06 {number[2:]}"))
    if region == "AU":
        if rng.random() < 0.6:
            number = "04" + _d(rng, 8)
            return rng.choice(
                (f"{number[:4]} {number[4:7]} {number[7:]}", number, f"+61 {number[1:4]} {number[4:7]} {number[7:]}")
            )
        number = rng.choice(("02", "03", "07", "08")) + str(rng.randint(5, 9)) + _d(rng, 7)
        return rng.choice((f"({number[:2]}) {number[2:6]} {number[6:]}", f"{number[:2]} {number[2:6]} {number[6:]}"))
    if region == "IN":
        number = rng.choice("6789") + _d(rng, 9)
        return rng.choice((f"{number[:5]} {number[5:]}", f"+91 {number[:5]} {number[5:]}", f"+91-{number}"))
    if region == "BR":
        area = rng.choice(("11", "21", "31", "41", "51", "61", "71", "81"))
        number = "9" + str(rng.randint(6, 9)) + _d(rng, 7)
        return rng.choice((f"({area}) {number[:5]}-{number[5:]}", f"+55 {area} {number[:5]}-{number[5:]}"))
    raise ValueError(region)


REGIONS_BY_LANG = {"en": ("US", "GB", "AU", "IN", "IT", "BR"), "es": ("ES", "US", "BR"), "de": ("DE",), "fr": ("FR",)}

FIRST = {
    "train": {
        "en": ("James", "Sarah", "Michael", "Emily", "David", "Rachel", "Thomas", "Laura", "Kevin", "Megan", "Priya", "Omar"),
        "es": ("Lucía", "Javier", "Carmen", "Alejandro", "Marta", "Diego", "Elena", "Pablo", "Nuria", "Andrés"),
        "de": ("Lukas", "Sabine", "Jürgen", "Katrin", "Tobias", "Anja", "Matthias", "Lena", "Stefan", "Greta"),
        "fr": ("Camille", "Julien", "Nathalie", "Mathieu", "Céline", "Antoine", "Élodie", "Pierre", "Manon", "Yann"),
    },
    "test": {
        "en": ("Jennifer", "Daniel", "Hannah", "Patrick", "Olivia", "Gareth", "Natalie", "Brian", "Aisha", "Connor"),
        "es": ("Sofía", "Miguel", "Raquel", "Sergio", "Beatriz", "Gonzalo", "Inés", "Rodrigo", "Alicia", "Tomás"),
        "de": ("Florian", "Ursula", "Dominik", "Heike", "Moritz", "Franziska", "Uwe", "Johanna", "Felix", "Birgit"),
        "fr": ("Sébastien", "Isabelle", "Romain", "Aurélie", "Clément", "Sandrine", "Hugo", "Mathilde", "Loïc", "Pauline"),
    },
}  # fmt: skip
SURNAME = {
    "train": {
        "en": ("Carter", "Nguyen", "O'Brien", "Patel", "Whitfield", "Henderson", "Okafor", "MacLeod", "Brooks", "Kowalski"),
        "es": ("García", "Fernández", "Ruiz", "Moreno", "Jiménez", "Navarro", "Herrera", "Castillo", "Ortega", "Delgado"),
        "de": ("Müller", "Schneider", "Becker", "Hoffmann", "Wagner", "Krause", "Neumann", "Schäfer", "Vogel", "Brandt"),
        "fr": ("Martin", "Lefèvre", "Moreau", "Girard", "Rousseau", "Fontaine", "Chevalier", "Garnier", "Lambert", "Dubois"),
    },
    "test": {
        "en": ("Thompson", "Reyes", "Fitzgerald", "Sharma", "Adeyemi", "Hughes", "Lindqvist", "Baxter", "Morrison", "Chen"),
        "es": ("López", "Sánchez", "Romero", "Álvarez", "Torres", "Domínguez", "Vázquez", "Gil", "Serrano", "Molina"),
        "de": ("Fischer", "Weber", "Schulz", "Richter", "Klein", "Wolf", "Zimmermann", "Hartmann", "Lange", "Kaiser"),
        "fr": ("Bernard", "Petit", "Durand", "Leroy", "Mercier", "Blanc", "Guerin", "Faure", "Roussel", "Perrin"),
    },
}  # fmt: skip
# Given names the gazetteer does not hold: only a title or a cue can find them.
RARE_FIRST = {
    "train": ("Oluwaseun", "Siddharth", "Xiaoling", "Tadeusz", "Eilidh", "Nnamdi", "Bartholomew", "Ximeno"),
    "test": ("Chiamaka", "Anirudh", "Saoirse", "Wojciech", "Thandiwe", "Radomir", "Ingeborg", "Leocadia"),
}
TITLES = {
    "en": ("Dr.", "Mr.", "Mrs.", "Ms.", "Prof."),
    "es": ("Sr.", "Sra.", "Dr."),
    "de": ("Herr", "Frau", "Dr."),
    "fr": ("M.", "Mme", "Dr"),
}


def person(rng: random.Random, split: str, lang: str) -> str:
    first = rng.choice(FIRST[split][lang])
    last = rng.choice(SURNAME[split][lang])
    if lang == "es" and rng.random() < 0.4:
        last = f"{last} {rng.choice(SURNAME[split][lang])}"
    return f"{first} {last}"


STREETS = {
    "train": {
        "en": ("Maple", "Oak", "Cedar", "Lincoln", "Highland", "Church", "Victoria", "Kingsley", "Willow", "Park"),
        "es": ("Mayor", "Alcalá", "de la Paz", "del Sol", "Goya", "San Vicente", "de Cervantes", "Real"),
        "de": ("Haupt", "Bahnhof", "Goethe", "Linden", "Schiller", "Garten", "Berg", "Kirch"),
        "fr": ("de la République", "Victor Hugo", "des Lilas", "Pasteur", "du Moulin", "Jean Jaurès", "des Écoles"),
    },
    "test": {
        "en": ("Elm", "Birch", "Washington", "Sycamore", "Chestnut", "Riverside", "Hawthorn", "Franklin", "Meadow"),
        "es": ("Serrano", "de Gràcia", "Velázquez", "del Carmen", "de Colón", "Princesa", "de la Libertad"),
        "de": ("Mozart", "Wald", "Rosen", "Feld", "Beethoven", "Markt", "Friedrich"),
        "fr": ("Voltaire", "Gambetta", "des Acacias", "de la Gare", "Saint-Honoré", "du Château"),
    },
}
EN_TYPES = {
    "train": ("Street", "Avenue", "Road", "Lane", "St.", "Drive"),
    "test": ("Street", "Ave", "Road", "Court", "Blvd", "Way"),
}
CITIES = {
    "en": (("Springfield", "IL", "62704"), ("Portland", "OR", "97205"), ("Austin", "TX", "78701"), ("Denver", "CO", "80203")),
    "uk": (("London", "SW1A 1AA"), ("Manchester", "M1 4BT"), ("Leeds", "LS1 5DL"), ("Bristol", "BS1 6QH")),
    "es": (("Madrid", "28013"), ("Barcelona", "08007"), ("Sevilla", "41001"), ("Valencia", "46002")),
    "de": (("Berlin", "10115"), ("München", "80331"), ("Hamburg", "20095"), ("Köln", "50667")),
    "fr": (("Paris", "75011"), ("Lyon", "69002"), ("Marseille", "13001"), ("Toulouse", "31000")),
}  # fmt: skip


def address(rng: random.Random, split: str, lang: str) -> str:
    street = rng.choice(STREETS[split][lang])
    number = str(rng.randint(1, 250))
    if lang == "en":
        kind = rng.choice(EN_TYPES[split])
        base = f"{number} {street} {kind}"
        tail = rng.random()
        if tail < 0.35:
            city, state, zipcode = rng.choice(CITIES["en"])
            return f"{base}, {city}, {state} {zipcode}"
        if tail < 0.55:
            city, postcode = rng.choice(CITIES["uk"])
            return f"{base}, {city} {postcode}"
        return base
    if lang == "es":
        kind = rng.choice(("Calle", "Avenida", "Paseo", "Plaza", "C/"))
        base = f"{kind} {street} {number}" if rng.random() < 0.5 else f"{kind} {street}, {number}"
        if rng.random() < 0.5:
            city, postcode = rng.choice(CITIES["es"])
            return f"{base}, {postcode} {city}"
        return base
    if lang == "de":
        kind = rng.choice(("straße", "str.", "weg", "allee", "platz"))
        base = f"{street}{kind} {number}{rng.choice(('', '', 'a', 'b'))}"
        if rng.random() < 0.55:
            city, postcode = rng.choice(CITIES["de"])
            return f"{base}, {postcode} {city}"
        return base
    kind = rng.choice(("rue", "avenue", "boulevard", "place", "allée"))
    base = f"{number}{rng.choice(('', '', ',', ' bis'))} {kind} {street}"
    if rng.random() < 0.6:
        city, postcode = rng.choice(CITIES["fr"])
        return f"{base}, {postcode} {city}"
    return base


LOCALS = ("j.smith", "maria.lopez", "k.weber", "claire.b", "dev-team", "hello", "tom_92", "ana.ruiz88", "lukas.m")
DOMAINS = (
    "gmail.com",
    "outlook.com",
    "yahoo.es",
    "web.de",
    "orange.fr",
    "example.co.uk",
    "mail.company.io",
    "uni-koeln.de",
)


def email(rng: random.Random, split: str, lang: str) -> str:
    if rng.random() < 0.5:
        first = rng.choice(FIRST[split][lang]).lower()
        last = rng.choice(SURNAME[split][lang]).lower().replace("'", "")
        for a, b in (("á", "a"), ("é", "e"), ("í", "i"), ("ó", "o"), ("ú", "u"), ("ü", "ue"), ("ö", "oe"), ("ä", "ae"),
                     ("è", "e"), ("ç", "c"), ("ñ", "n"), ("ï", "i"), ("ß", "ss"), (" ", "")):  # fmt: skip
            first, last = first.replace(a, b), last.replace(a, b)
        local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}", f"{last}.{first}"))
    else:
        local = rng.choice(LOCALS)
    return f"{local}@{rng.choice(DOMAINS)}"


# ---------------------------------------------------------------------------------------------
# Sentence frames. {v} is the value; lists are split by position (every third frame to test).

FRAMES: dict[str, dict[str, list[tuple[str, str]]]] = {
    # entity: lang: [(direction, frame)]
    "email": {
        "en": [
            ("input", "you can email me at {v} if that's easier"),
            ("input", "My email is {v}, please send the invoice there"),
            ("output", "I've updated the contact address on your profile to {v}."),
            ("input", "cc {v} on the reply pls"),
            ("input", "Contact: {v}"),
            ("output", "Your confirmation will be sent to {v} within a few minutes."),
            ("input", "why does {v} keep bouncing? the mailbox isn't full"),
            ("input", "forward the logs to {v} and to me"),
            ("input", "hi, its {v} again, still no reply from support"),
        ],
        "es": [
            ("input", "mi correo es {v}, escríbeme ahí"),
            ("input", "Mándame el presupuesto a {v} por favor"),
            ("output", "He enviado el resumen a {v}."),
            ("input", "no me llega nada a {v}, ¿qué pasa?"),
            ("input", "Correo de contacto: {v}"),
            ("input", "podéis escribir a {v} para cualquier duda"),
        ],
        "de": [
            ("input", "Meine E-Mail-Adresse ist {v}"),
            ("input", "schick das bitte an {v}, danke"),
            ("output", "Die Bestätigung geht an {v}."),
            ("input", "Kontakt: {v} (nur werktags)"),
            ("input", "warum landet alles von {v} im Spam?"),
            ("input", "Bitte antworten Sie an {v} statt an die alte Adresse"),
        ],
        "fr": [
            ("input", "mon adresse mail c'est {v}"),
            ("input", "Écrivez-moi à {v} svp"),
            ("output", "Un e-mail de confirmation a été envoyé à {v}."),
            ("input", "Contact : {v}"),
            ("input", "je ne reçois rien sur {v}, vous pouvez vérifier ?"),
            ("input", "envoie le devis à {v} avant vendredi"),
        ],
    },
    "phone": {
        "en": [
            ("input", "call me on {v} after 6pm"),
            ("input", "My mobile is {v}"),
            ("input", "you can reach my husband at {v} if I don't pick up"),
            ("output", "I've saved {v} as your callback number."),
            ("input", "text {v} when you're outside"),
            ("input", "the landlord's number is {v}, he never answers"),
            ("input", "Phone: {v}"),
            ("input", "whatsapp me {v}"),
            ("input", "is {v} a scam number? they called three times today"),
            ("output", "The clinic can be reached on {v} during opening hours."),
            ("input", "please update my contact number to {v}"),
            ("input", "ring {v} and ask for the night manager"),
        ],
        "es": [
            ("input", "llámame al {v} cuando puedas"),
            ("input", "Mi móvil es el {v}"),
            ("input", "mi número: {v}"),
            ("output", "Hemos registrado el teléfono {v} para la entrega."),
            ("input", "si no contesto, prueba en el {v}"),
            ("input", "Teléfono de contacto {v}"),
            ("input", "me están llamando del {v}, ¿es spam?"),
            ("input", "mándame un whatsapp al {v}"),
        ],
        "de": [
            ("input", "Ruf mich unter {v} an"),
            ("input", "Meine Handynummer ist {v}"),
            ("input", "Tel. {v}"),
            ("output", "Ich habe {v} als Rückrufnummer hinterlegt."),
            ("input", "erreichbar unter {v}, ab 18 Uhr"),
            ("input", "die Nummer vom Vermieter: {v}"),
            ("input", "wer ruft mich ständig von {v} an?"),
            ("input", "Telefon: {v} (Festnetz)"),
        ],
        "fr": [
            ("input", "appelle-moi au {v}"),
            ("input", "Mon portable : {v}"),
            ("input", "vous pouvez me joindre au {v} en journée"),
            ("output", "Le numéro {v} a été ajouté à votre dossier de livraison."),
            ("input", "numéro du plombier {v}, il passe demain"),
            ("input", "Tél. {v}"),
            ("input", "quelqu'un m'appelle du {v} tous les soirs"),
            ("input", "envoie un SMS au {v} quand tu arrives"),
        ],
    },
    "creditCard": {
        "en": [
            ("input", "my card number is {v}, expiry 08/27"),
            ("input", "charge it to {v}"),
            ("input", "Card: {v} CVV 123"),
            ("input", "why was {v} declined at checkout?"),
            ("output", "I'll use the card ending in the number you gave, {v}, for this order."),
            ("input", "someone used {v} without my permission, how do I dispute it"),
            ("input", "pay with {v} exp 11/26"),
            ("input", "here's the corporate card {v}, keep it safe"),
        ],
        "es": [
            ("input", "mi tarjeta es {v}, caduca en 09/26"),
            ("input", "cárgalo a la tarjeta {v}"),
            ("input", "me han rechazado la {v}, ¿por qué?"),
            ("input", "Número de tarjeta: {v}"),
            ("input", "alguien ha usado mi tarjeta {v} en una tienda online"),
        ],
        "de": [
            ("input", "Kreditkarte {v}, gültig bis 03/28"),
            ("input", "buch es bitte auf {v}"),
            ("input", "Kartennummer: {v}"),
            ("input", "meine Karte {v} wurde gesperrt, was tun?"),
            ("output", "Die Zahlung mit der Karte {v} wurde vorgemerkt."),
        ],
        "fr": [
            ("input", "ma carte c'est {v}, exp 05/27"),
            ("input", "payez avec la carte {v}"),
            ("input", "Numéro de carte : {v}"),
            ("input", "ma carte {v} a été refusée au péage"),
            ("input", "débit frauduleux sur {v}, que faire ?"),
        ],
    },
    "ssn": {
        "en": [
            ("input", "my SSN is {v}"),
            ("input", "social security number {v}, DOB 04/12/1986"),
            ("input", "SSN: {v}"),
            ("input", "the form wants my social, it's {v}"),
            ("input", "I typed {v} as my social security number, is that safe?"),
            ("output", "I've filled in the SSN field with {v} as you asked."),
            ("input", "employee record: name on file, ssn {v}, start date Monday"),
            ("input", "is it normal that the bank asked for my full social ({v}) by email?"),
        ],
    },
    "ipAddress": {
        "en": [
            ("input", "the server at {v} keeps timing out"),
            ("input", "ssh into {v} and restart nginx"),
            ("input", "my home IP is {v}, whitelist it please"),
            ("output", "The request came from {v}, which is outside your allowed range."),
            ("input", "blocked connections from {v} all night"),
            ("input", "ping {v} returns nothing"),
            ("input", "set the DNS to {v}"),
            ("input", "log line: client={v} status=403"),
        ],
        "es": [("input", "mi IP es {v}, ¿podéis desbloquearla?"), ("input", "el servidor {v} no responde")],
        "de": [("input", "unsere Firewall blockiert {v}"), ("input", "der Router hat die Adresse {v}")],
        "fr": [("input", "l'adresse IP {v} est bannie, pourquoi ?"), ("input", "le serveur {v} ne répond plus")],
    },
    "iban": {
        "en": [
            ("input", "send the refund to IBAN {v}"),
            ("input", "my bank details: {v}"),
            ("input", "IBAN: {v}, name on the account is the same"),
            ("output", "The transfer to {v} has been scheduled."),
            ("input", "is {v} a valid iban? the form rejects it"),
        ],
        "es": [("input", "mi IBAN es {v}"), ("input", "haz la transferencia a {v}"), ("input", "Cuenta: {v}")],
        "de": [
            ("input", "meine IBAN lautet {v}"),
            ("input", "bitte überweisen an {v}"),
            ("input", "Bankverbindung: {v}"),
        ],
        "fr": [("input", "mon IBAN : {v}"), ("input", "virement à faire sur {v}"), ("input", "RIB / IBAN {v}")],
    },
    "personName": {
        "en": [
            ("input", "I'm writing on behalf of {v}, who can't use a computer"),
            ("input", "please add {v} to the booking"),
            ("output", "I've drafted the letter to {v} below."),
            ("input", "my manager {v} keeps taking credit for my work"),
            ("input", "the parcel was signed for by {v}, not me"),
            ("input", "can you write a reference for {v}? she worked here 3 years"),
            ("input", "Invite {v} and me to the Thursday call"),
        ],
        "es": [
            ("input", "escribo en nombre de {v}"),
            ("input", "añade a {v} a la reserva"),
            ("output", "Aquí tienes el borrador de la carta para {v}."),
            ("input", "mi jefa, {v}, no me paga las horas extra"),
        ],
        "de": [
            ("input", "ich schreibe im Auftrag von {v}"),
            ("input", "bitte {v} zur Buchung hinzufügen"),
            ("output", "Hier ist der Entwurf des Schreibens an {v}."),
            ("input", "mein Nachbar {v} parkt ständig vor meiner Einfahrt"),
        ],
        "fr": [
            ("input", "j'écris au nom de {v}"),
            ("input", "ajoute {v} à la réservation"),
            ("output", "Voici le brouillon de la lettre pour {v}."),
            ("input", "ma collègue {v} ne répond plus à mes mails"),
        ],
    },
    "address": {
        "en": [
            ("input", "ship it to {v}"),
            ("input", "I live at {v}, is that in the delivery area?"),
            ("input", "Address: {v}"),
            ("output", "Your new billing address is {v}."),
            ("input", "the noise comes from the flat at {v} every night"),
            ("input", "we moved to {v} last month"),
        ],
        "es": [
            ("input", "envíalo a {v}"),
            ("input", "vivo en {v}"),
            ("input", "Dirección: {v}"),
            ("output", "La dirección de entrega es {v}."),
        ],
        "de": [
            ("input", "bitte liefern an {v}"),
            ("input", "ich wohne in der {v}"),
            ("input", "Adresse: {v}"),
            ("output", "Die neue Lieferadresse lautet {v}."),
        ],
        "fr": [
            ("input", "livrez à {v}"),
            ("input", "j'habite au {v}"),
            ("input", "Adresse : {v}"),
            ("output", "L'adresse de facturation est désormais {v}."),
        ],
    },
}

# Names found by a title or a cue ({t} is the title, {f} a given name the gazetteer may not know).
NAME_CUE_FRAMES = {
    "en": [
        ("input", "Hi, my name is {f} {s} and I need help with my account"),
        ("input", "Name: {f} {s}"),
        ("input", "please cancel the appointment with {t} {s} tomorrow"),
        ("input", "I am called {f} {s}, I'm new here"),
        ("output", "Dear {t} {s}, thank you for your message."),
        ("input", "{t} {s} said the results were fine but I'm still worried"),
    ],
    "es": [
        ("input", "hola, me llamo {f} {s} y no puedo entrar"),
        ("input", "Nombre: {f} {s}"),
        ("input", "tengo cita con la {t} {s} el lunes"),
        ("input", "mi nombre es {f} {s}"),
    ],
    "de": [
        ("input", "Hallo, ich heiße {f} {s} und habe eine Frage"),
        ("input", "Name: {f} {s}"),
        ("input", "Termin bei {t} {s} absagen bitte"),
        ("input", "mein Name ist {f} {s}"),
    ],
    "fr": [
        ("input", "bonjour, je m'appelle {f} {s}"),
        ("input", "Nom : {f} {s}"),
        ("input", "rendez-vous avec {t} {s} jeudi"),
        ("input", "mon nom est {f} {s}"),
    ],
}

# Two entities in one line.
PAIR_FRAMES = [
    ("en", "input", "email", "phone", "contact me at {a} or {b}"),
    ("en", "input", "phone", "email", "Phone {a} / Email {b}"),
    ("en", "input", "creditCard", "email", "card {a}, receipt to {b}"),
    ("en", "output", "email", "phone", "We'll write to {a} and call {b} if anything changes."),
    ("en", "input", "ssn", "phone", "SSN {a}, callback number {b}"),
    ("es", "input", "email", "phone", "escríbeme a {a} o llámame al {b}"),
    ("de", "input", "email", "phone", "E-Mail {a}, Telefon {b}"),
    ("fr", "input", "phone", "email", "tél {a} - mail {b}"),
    ("en", "input", "iban", "email", "IBAN {a}, send the remittance advice to {b}"),
    ("de", "input", "iban", "phone", "IBAN {a}; Rückfragen unter {b}"),
    ("en", "input", "ipAddress", "email", "login from {a} flagged, notify {b}"),
    ("es", "input", "creditCard", "phone", "tarjeta {a}, mi teléfono {b}"),
]

# ---------------------------------------------------------------------------------------------
# Hard negatives: numbers and names that are not personal data.


NEGATIVE_FRAMES: list[tuple[str, str, str, str]] = [
    # (note, lang, direction, frame); {card_bad} etc. are filled by NEGATIVE_VALUES
    ("Luhn-invalid card", "en", "input", "is {card_bad} a real card number? my test fails"),
    ("Luhn-invalid card", "en", "input", "card {card_bad} keeps getting declined"),
    ("Luhn-invalid card", "es", "input", "la tarjeta {card_bad} no pasa la validación"),
    ("Luhn-invalid card", "de", "input", "Karte {card_bad} wird abgelehnt"),
    ("Luhn-invalid card", "fr", "input", "la carte {card_bad} est refusée"),
    ("Luhn-invalid card", "en", "output", "The number {card_bad} fails the Luhn check, so it cannot be a valid card."),
    ("invalid IBAN", "en", "input", "the bank says {iban_bad} is not a valid IBAN"),
    ("invalid IBAN", "de", "input", "IBAN {iban_bad} wird als ungültig angezeigt"),
    ("invalid IBAN", "es", "input", "me dice que {iban_bad} no es un IBAN válido"),
    ("invalid IBAN", "fr", "input", "l'IBAN {iban_bad} est refusé par le formulaire"),
    ("invalid IBAN", "en", "input", "IBAN: {iban_bad}"),
    ("invalid SSN", "en", "input", "is {ssn_bad} a valid SSN? the form says no"),
    ("invalid SSN", "en", "input", "SSN {ssn_bad} was rejected"),
    ("invalid SSN", "en", "output", "{ssn_bad} cannot be a social security number: that range is never issued."),
    ("IMEI", "en", "input", "my phone's IMEI is {imei}, it got stolen"),
    ("IMEI", "en", "input", "IMEI {imei} shows as blacklisted"),
    ("IMEI", "de", "input", "IMEI-Nummer {imei}, Gerät gestohlen"),
    ("IMEI", "fr", "input", "IMEI : {imei}"),
    ("IMEI", "es", "input", "el IMEI del móvil es {imei}"),
    ("order id", "en", "input", "order #{order} still hasn't shipped"),
    ("order id", "en", "input", "Order number {order} arrived damaged"),
    ("order id", "es", "input", "pedido {order}, llegó roto"),
    ("order id", "de", "input", "Bestellnummer {order} ist nicht angekommen"),
    ("order id", "fr", "input", "commande n° {order} toujours pas livrée"),
    ("tracking number", "en", "input", "tracking {tracking} says delivered but nothing here"),
    ("invoice", "de", "input", "Rechnungsnummer {order} bitte korrigieren"),
    ("invoice", "fr", "input", "facture {order} payée deux fois"),
    ("invoice", "es", "input", "factura {order} duplicada"),
    ("date", "en", "input", "the meeting moved to {date}"),
    ("date", "de", "input", "Termin am {date_eu} um 14:30"),
    ("date", "fr", "input", "rendez-vous le {date_eu} à 9h"),
    ("date", "es", "input", "la cita es el {date_eu}"),
    ("timestamp", "en", "input", "the log says ts={epoch} then the worker died"),
    ("timestamp", "en", "output", "The event happened at Unix time {epoch}."),
    ("version", "en", "input", "after upgrading to v{version} the build fails"),
    ("version", "en", "input", "pip install torch=={version} breaks numpy"),
    ("price", "en", "input", "it costs ${price} per year, worth it?"),
    ("price", "de", "input", "das Auto kostet {price_eu} €"),
    ("price", "fr", "input", "le loyer est de {price_eu} € par mois"),
    ("price", "es", "input", "el piso cuesta {price_eu} euros"),
    ("measurement", "en", "input", "we had {big} page views and {big} sessions last month"),
    ("measurement", "en", "output", "The dataset has {big} rows and {big} columns of features."),
    (
        "helpline",
        "en",
        "output",
        "If you are in danger right now, call 911. You can also call or text 988, or text HOME to 741741.",
    ),
    (
        "helpline",
        "en",
        "output",
        "In the US you can reach the Lifeline at 1-800-273-8255 or simply dial 988, any time.",
    ),
    (
        "helpline",
        "en",
        "output",
        "In the UK and Ireland, Samaritans are available on 116 123, free, day or night. In an emergency call 999.",
    ),
    (
        "helpline",
        "de",
        "output",
        "Die TelefonSeelsorge ist rund um die Uhr erreichbar: 0800 111 0 111 oder 0800 111 0 222. Im Notfall 112.",
    ),
    (
        "helpline",
        "es",
        "output",
        "Puedes llamar al 024, la línea de atención a la conducta suicida, o al 112 si es urgente.",
    ),
    (
        "helpline",
        "fr",
        "output",
        "Vous pouvez appeler le 3114, numéro national de prévention du suicide, ou le 112 en urgence.",
    ),
    ("helpline", "en", "output", "Lifeline Australia is on 13 11 14; for emergencies dial 000."),
    ("helpline", "en", "output", "Childline / Nummer gegen Kummer: 116 111. TelefonSeelsorge +49 800 111 0 111."),
    ("lone first name", "en", "input", "thanks {first}, that fixed it!"),
    ("lone first name", "es", "input", "gracias {first}, ya funciona"),
    ("lone first name", "de", "input", "Danke {first}, passt so"),
    ("lone first name", "fr", "input", "merci {first} pour ton aide"),
    ("place", "en", "input", "meet me at Victoria Station at noon"),
    ("place", "en", "input", "we flew into Charles de Gaulle and took the train to Lyon"),
    ("product", "en", "input", "is the Samsung Galaxy S23 worth it in 2024?"),
    ("code", "en", "input", "kill -9 1234567 didn't stop the process"),
    ("math", "en", "input", "what is 12345678 times 87654321?"),
    ("street-like", "en", "input", "I've played 5 Street Fighter games and this one is the best"),
    ("coordinates", "en", "input", "the GPS says 48.8566, 2.3522"),
    ("isbn", "en", "input", "ISBN 978-0-306-40615-7, second edition"),
    ("sequence", "en", "input", "numbers 1 2 3 4 5 6 7 8 9 10 in order"),
    ("hash", "en", "input", "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 broke CI"),
    ("uuid", "en", "input", "request id 3f2b6c1e-8a4d-4e2f-9b7a-1c2d3e4f5a6b failed"),
    ("model id", "en", "input", "compare gpt-4-0613 with claude-3-opus-20240229"),
    ("score", "en", "input", "final score 3-2, attendance 54,321"),
    ("postcode only", "en", "input", "is SW1A 1AA in central London?"),
    ("public figure in news", "en", "output", "The treaty was signed in 1648 after decades of war."),
]


def negative_values(rng: random.Random) -> dict[str, str]:
    return {
        "card_bad": card(rng, valid=False),
        "iban_bad": iban(rng, valid=False),
        "ssn_bad": ssn(rng, valid=False),
        "imei": imei(rng),
        "order": str(rng.randint(10**6, 10**10)),
        "tracking": "1Z" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "date": rng.choice(("2024-03-15", "03/15/2024", "March 15, 2024", "2025-11-02", "11/02/2025")),
        "date_eu": rng.choice(("15.03.2024", "02/11/2025", "15/03/2024", "02.11.2025")),
        "epoch": str(rng.randint(1_600_000_000, 1_800_000_000)) + rng.choice(("", str(rng.randint(100, 999)))),
        "version": f"{rng.randint(1, 3)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        "price": f"{rng.randint(1, 99)},{rng.randint(100, 999)}.{rng.randint(10, 99)}",
        "price_eu": f"{rng.randint(10, 999)}.{rng.randint(100, 999)},00",
        "big": f"{rng.randint(10_000_000, 99_999_999)}",
        "first": rng.choice(("Sarah", "Lucía", "Jonas", "Camille", "Daniel", "Marta", "Lena", "Hugo")),
    }


# ---------------------------------------------------------------------------------------------


def _split(frames: list, split: str) -> list:
    return [f for i, f in enumerate(frames) if (i % 3 == 2) == (split == "test")]


def _line(text: str, labels: list[str], values: list[str], lang: str, direction: str, note: str = "") -> dict:
    for value in values:
        assert value in text, (value, text)
    return {
        "text": text,
        "labels": sorted(set(labels)),
        "values": values,
        "lang": lang,
        "direction": direction,
        "note": note,
    }


def value_for(entity: str, rng: random.Random, split: str, lang: str) -> str:
    if entity == "email":
        return email(rng, split, lang)
    if entity == "phone":
        return phone(rng, rng.choice(REGIONS_BY_LANG[lang]))
    if entity == "creditCard":
        return card(rng)
    if entity == "ssn":
        return ssn(rng, sep=rng.choice(("-", "-", " ")))
    if entity == "ipAddress":
        return ipv4(rng) if rng.random() < 0.8 else ipv6(rng)
    if entity == "iban":
        country = {"de": "DE", "es": "ES", "fr": "FR"}.get(lang) if rng.random() < 0.6 else None
        return iban(rng, country=country)
    if entity == "personName":
        return person(rng, split, lang)
    if entity == "address":
        return address(rng, split, lang)
    raise ValueError(entity)


def build(split: str) -> list[dict]:
    rng = random.Random(f"pii-{split}")
    # Test frames are a third of the frames: drawn more often, so the test split has 300 lines or more.
    repeat = 3 if split == "train" else 4
    lines: list[dict] = []
    for entity, by_lang in FRAMES.items():
        for lang, frames in by_lang.items():
            for direction, frame in _split(frames, split):
                for _ in range(repeat):
                    value = value_for(entity, rng, split, lang)
                    lines.append(_line(frame.format(v=value), [entity], [value], lang, direction))
    # SSNs without separators, with a cue
    for direction, frame in _split(
        [
            ("input", "ssn {v}"),
            ("input", "my social security number is {v}"),
            ("input", "Social: {v}"),
            ("input", "SSN#{v}"),
            ("input", "the social security no. on the W-2 is {v}"),
            ("input", "need to verify ssn {v} before payroll runs"),
        ],
        split,
    ):
        for _ in range(repeat):
            value = ssn(rng, sep="")
            lines.append(_line(frame.format(v=value), ["ssn"], [value], "en", direction, "unseparated, with a cue"))
    # Spelled-out emails
    for direction, frame in _split(
        [
            ("input", "email me: {u} (at) {d} (dot) com"),
            ("input", "reach me at {u} at {d} dot com"),
            ("input", "contact {u} [at] {d} [dot] org"),
            ("input", "mi correo: {u} arroba... no, {u} at {d} dot com"),
            ("input", "write to {u}(at){d}.de"),
            ("input", "{u} at {d} dot net, no spam pls"),
        ],
        split,
    ):
        for _ in range(2):
            user = rng.choice(("jane.doe", "mike77", "l.moreau", "k_schulz", "ana.gil", "tomwhite"))
            domain = rng.choice(("gmail", "outlook", "proton", "example", "fastmail"))
            text = frame.format(u=user, d=domain)
            start = text.rindex(user)
            end = max(text.rfind(s) + len(s) for s in (" com", " org", ".de", " net", ")com", "]org") if s in text)
            value = text[start:end]
            lines.append(_line(text, ["email"], [value], "en", direction, "spelled out"))
    # Names by a title or a cue
    for lang, frames in NAME_CUE_FRAMES.items():
        for direction, frame in _split(frames, split):
            for _ in range(repeat):
                first = rng.choice(RARE_FIRST[split] + FIRST[split][lang])
                surname = rng.choice(SURNAME[split][lang])
                title = rng.choice(TITLES[lang])
                text = frame.format(f=first, s=surname, t=title)
                value = surname if "{t}" in frame else f"{first} {surname}"
                lines.append(_line(text, ["personName"], [value], lang, direction))
    # Two entities
    for lang, direction, first_entity, second_entity, frame in _split(PAIR_FRAMES, split):
        for _ in range(repeat):
            a = value_for(first_entity, rng, split, lang)
            b = value_for(second_entity, rng, split, lang)
            lines.append(_line(frame.format(a=a, b=b), [first_entity, second_entity], [a, b], lang, direction))
    # Hard negatives
    for note, lang, direction, frame in _split(NEGATIVE_FRAMES, split):
        count = 4 if "{" in frame else 1
        for _ in range(count):
            text = frame.format(**negative_values(rng))
            lines.append(_line(text, [], [], lang, direction, f"hard negative: {note}"))
    # An invalid IBAN whose 16-digit run after the check digits passes Luhn (the reproduced fault)
    made = 0
    while made < (8 if split == "train" else 6):
        bad = iban(rng, valid=False, country="DE").replace(" ", "")
        run = bad[4:20]
        if run[0] == "4" and luhn_digit(run[:-1]) == run[-1]:
            spaced = group(bad, (4,) * 6, " ")
            frame = rng.choice(("iban {v} please", "IBAN: {v}", "überweise an {v}", "the IBAN {v} is rejected"))
            lines.append(
                _line(
                    frame.format(v=spaced), [], [], "en", "input", "hard negative: invalid IBAN with a Luhn-valid run"
                )
            )
            made += 1
    # Negatives without any number at all (most traffic)
    for text, lang in _split(PLAIN, split):
        lines.append(_line(text, [], [], lang, "input", "hard negative: no personal data"))
    for text, labels, values, lang, direction, note in HANDWRITTEN[split]:
        lines.append(_line(text, labels, values, lang, direction, note))
    rng.shuffle(lines)
    return lines


PLAIN = [
    ("How do I reset my password if I no longer have access to the old email?", "en"),
    ("Write a haiku about the first snow in Kyoto", "en"),
    ("What's the difference between a Roth IRA and a traditional one?", "en"),
    ("Summarise the attached meeting notes in three bullet points", "en"),
    ("¿Cuál es la capital de Australia?", "es"),
    ("Wie lange muss ein Ei kochen, damit es wachsweich ist?", "de"),
    ("Quelle est la meilleure période pour visiter la Bretagne ?", "fr"),
    ("My Name Is Earl was a great show", "en"),
    ("Tell Me About The French Revolution In Simple Terms", "en"),
    ("Marie Curie won two Nobel prizes, in physics and in chemistry", "en"),
    ("I Want To Learn Spanish Before My Trip To Madrid", "en"),
    ("Can you explain what Apple Pay does with my card details?", "en"),
    ("El Real Madrid ganó ayer en el Santiago Bernabéu", "es"),
    ("Der Kölner Dom ist beeindruckend", "de"),
    ("La Tour Eiffel fait 330 mètres", "fr"),
    ("Thomas Edison did not invent the light bulb alone", "en"),
    ("Please Read The Terms And Conditions Carefully", "en"),
    ("who won the Champions League in 2019?", "en"),
    ("Dear Sir or Madam, I am writing to complain about the service", "en"),
    ("New York Times Best Seller list this week", "en"),
    ("Hello Kitty merch is everywhere in Tokyo", "en"),
    ("Jack Daniels or Jim Beam for a whiskey sour?", "en"),
    ("Buenos días, ¿me ayudas con una receta de paella?", "es"),
    ("Bonjour, pouvez-vous m'aider à rédiger une lettre de motivation ?", "fr"),
    ("Guten Tag, ich brauche Hilfe bei meiner Steuererklärung", "de"),
    ("Harry Potter and the Goblet of Fire is my favourite", "en"),
    ("Is Monday or Tuesday better for a team offsite?", "en"),
    ("Santa Claus is coming to town", "en"),
    ("How many calories are in a Big Mac?", "en"),
    ("Peter Pan syndrome: is it a real diagnosis?", "en"),
]


# Lines written one by one, with the untidy formats people use; (text, labels, values, lang, direction, note).
# fmt: off
HANDWRITTEN: dict[str, list[tuple[str, list[str], list[str], str, str, str]]] = {
    "train": [
        ("pls call me back 415 555 0132 asap", ["phone"], ["415 555 0132"], "en", "input", ""),
        ("my cell # is (646) 555-0199", ["phone"], ["(646) 555-0199"], "en", "input", ""),
        ("Tel.: +49 (0)30 901820", ["phone"], ["+49 (0)30 901820"], "de", "input", ""),
        ("whatsapp +34 612 345 678 o email a lucia.gil@correo.es", ["phone", "email"], ["+34 612 345 678", "lucia.gil@correo.es"], "es", "input", ""),
        ("numéro: 06.45.12.78.90 (après 18h)", ["phone"], ["06.45.12.78.90"], "fr", "input", ""),
        ("UK mob 07700 900 461", ["phone"], ["07700 900 461"], "en", "input", ""),
        ("contact: 0044 7911 123 456", ["phone"], ["0044 7911 123 456"], "en", "input", ""),
        ("my card: 5425-2334-3010-9903 exp 04/28", ["creditCard"], ["5425-2334-3010-9903"], "en", "input", ""),
        ("Amex 3714 496353 98431", ["creditCard"], ["3714 496353 98431"], "en", "input", ""),
        ("visa 4012888888881881", ["creditCard"], ["4012888888881881"], "en", "input", ""),
        ("SSN 536-90-4399 and DOB 1990-05-17", ["ssn"], ["536-90-4399"], "en", "input", ""),
        ("IBAN GB33BUKB20201555555555", ["iban"], ["GB33BUKB20201555555555"], "en", "input", ""),
        ("server 172.16.254.1 is down again", ["ipAddress"], ["172.16.254.1"], "en", "input", ""),
        ("hola soy Marta Ruiz Delgado, os escribo por la factura", ["personName"], ["Marta Ruiz Delgado"], "es", "input", ""),
        ("Sehr geehrte Frau Dr. Hoffmann, vielen Dank", ["personName"], ["Hoffmann"], "de", "input", ""),
        ("the version is 10.4.22.1 on all hosts", [], [], "en", "input", "hard negative: four-part version number"),
        ("call me maybe, it's been 10 years", [], [], "en", "input", "hard negative: no number"),
        ("room 214, floor 3, building 12", [], [], "en", "input", "hard negative: room numbers"),
        ("the 2023-2024 season had 38 games", [], [], "en", "input", "hard negative: season"),
        ("Artikelnummer 4006381333931", [], [], "de", "input", "hard negative: EAN barcode"),
        ("temps record : 9,58 s sur 100 m", [], [], "fr", "input", "hard negative: measurement"),
        ("I paid 1.299,00 € for the 65'' TV", [], [], "en", "input", "hard negative: price"),
        ("between 09:00-17:30, Mon-Fri", [], [], "en", "input", "hard negative: opening hours"),
    ],
    "test": [
        ("ring me on 07123 456789 x", ["phone"], ["07123 456789"], "en", "input", ""),
        ("call (312) 555-0147 ext. 12", ["phone"], ["(312) 555-0147"], "en", "input", ""),
        ("mi número es 655 12 34 56, llámame esta tarde", ["phone"], ["655 12 34 56"], "es", "input", ""),
        ("Handy 0176 23456789 oder Festnetz 089 1234567", ["phone"], ["0176 23456789", "089 1234567"], "de", "input", ""),
        ("mon tél. 07 81 22 33 44", ["phone"], ["07 81 22 33 44"], "fr", "input", ""),
        ("cell: +1-202-555-0173", ["phone"], ["+1-202-555-0173"], "en", "input", ""),
        ("India office +91 80 2345 6789", ["phone"], ["+91 80 2345 6789"], "en", "input", ""),
        ("Melbourne: (03) 9123 4567", ["phone"], ["(03) 9123 4567"], "en", "input", ""),
        ("card no 6011 0009 9013 9424 please charge 30 USD", ["creditCard"], ["6011 0009 9013 9424"], "en", "input", ""),
        ("mastercard 2223 0031 2200 3222", ["creditCard"], ["2223 0031 2200 3222"], "en", "input", ""),
        ("JCB 3530111333300000", ["creditCard"], ["3530111333300000"], "en", "input", ""),
        ("diners 3056 930902 5904", ["creditCard"], ["3056 930902 5904"], "en", "input", ""),
        ("soc sec 078-05-1120", ["ssn"], ["078-05-1120"], "en", "input", ""),
        ("IBAN FR76 3000 6000 0112 3456 7890 189", ["iban"], ["FR76 3000 6000 0112 3456 7890 189"], "fr", "input", ""),
        ("meine IBAN: DE44 5001 0517 5407 3249 31", ["iban"], ["DE44 5001 0517 5407 3249 31"], "de", "input", ""),
        ("ES91 2100 0418 4502 0005 1332 es mi cuenta", ["iban"], ["ES91 2100 0418 4502 0005 1332"], "es", "input", ""),
        ("fe80::1ff:fe23:4567:890a is the link-local address", ["ipAddress"], ["fe80::1ff:fe23:4567:890a"], "en", "input", ""),
        ("write to support (at) acme-tools (dot) com", ["email"], ["support (at) acme-tools (dot) com"], "en", "input", "spelled out"),
        ("Mme Dominique Perrin a appelé ce matin", ["personName"], ["Dominique Perrin"], "fr", "input", ""),
        ("the tenant, Mr. Baxter, has not paid", ["personName"], ["Baxter"], "en", "input", ""),
        ("deliver to 77 Sycamore Road, Leeds LS1 5DL", ["address"], ["77 Sycamore Road, Leeds LS1 5DL"], "en", "input", ""),
        ("IMEI 490154203237518", [], [], "en", "input", "hard negative: IMEI"),
        ("card 5500 0000 0000 0005 is expired?", [], [], "en", "input", "hard negative: Luhn-invalid card"),
        ("flight LH 4406 leaves 06:45 from gate B12", [], [], "en", "input", "hard negative: flight"),
        ("pedido nº 100-2345678-9012345", [], [], "es", "input", "hard negative: order id"),
        ("Version 2024.11.3 ist draußen", [], [], "de", "input", "hard negative: version"),
        ("le colis 6A12345678901 est bloqué", [], [], "fr", "input", "hard negative: parcel"),
        ("ssn 000-45-6789 is obviously fake", [], [], "en", "input", "hard negative: invalid SSN"),
        ("DE00 1234 5678 9012 3456 78 is a placeholder", [], [], "en", "input", "hard negative: invalid IBAN"),
        ("population 67,390,000 in 2023", [], [], "en", "input", "hard negative: number"),
        ("between 1999 and 2004 prices rose 23.5%", [], [], "en", "input", "hard negative: years"),
    ],
}
# fmt: on


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    splits = {split: build(split) for split in ("train", "test")}
    train_texts = {line["text"] for line in splits["train"]}
    overlap = [line["text"] for line in splits["test"] if line["text"] in train_texts]
    assert not overlap, overlap[:3]
    for split, lines in splits.items():
        with (OUT / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for line in lines:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        print(split, len(lines), "lines,", sum(1 for line in lines if not line["labels"]), "negatives")


if __name__ == "__main__":
    main()

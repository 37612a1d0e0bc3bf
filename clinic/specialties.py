"""Specialties a clinic may list, keyed in English, named in Persian and English for menus."""

SPECIALTIES: dict[str, tuple[str, str]] = {
    "ophthalmology": ("چشم‌پزشکی", "ophthalmology"),
    "psychiatry": ("روانپزشکی", "psychiatry"),
    "midwifery": ("مامایی", "midwifery"),
    "general_practice": ("پزشک عمومی", "general practice"),
    "gastroenterology": ("گوارش", "gastroenterology"),
    "obstetrics_gynaecology": ("زنان و زایمان", "obstetrics and gynaecology"),
    "breast_surgery": ("جراحی پستان", "breast surgery"),
    "internal_medicine": ("داخلی", "internal medicine"),
    "endocrinology": ("غدد", "endocrinology"),
    "cardiology": ("قلب و عروق", "cardiology"),
    "dermatology": ("پوست", "dermatology"),
    "paediatrics": ("کودکان", "paediatrics"),
    "ent": ("گوش، حلق و بینی", "ear, nose and throat"),
    "neurology": ("مغز و اعصاب", "neurology"),
    "orthopaedics": ("ارتوپدی", "orthopaedics"),
    "urology": ("اورولوژی", "urology"),
    "nutrition": ("تغذیه", "nutrition"),
    "psychology": ("روانشناسی", "psychology"),
}

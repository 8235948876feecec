"""A small embedded code table for synthetic data: real SNOMED CT, ICD-10-CM, RxNorm, LOINC, CVX, CPT, NUCC
and UCUM codes with their display names, enough to build valid C-CDA entries without a terminology server."""

# (SNOMED CT, ICD-10-CM, display)
PROBLEMS = [
    ("59621000", "I10", "Essential hypertension"),
    ("44054006", "E11.9", "Diabetes mellitus type 2"),
    ("195967001", "J45.909", "Asthma"),
    ("13645005", "J44.9", "Chronic obstructive lung disease"),
    ("55822004", "E78.5", "Hyperlipidemia"),
    ("35489007", "F32.9", "Depressive disorder"),
    ("197480006", "F41.9", "Anxiety disorder"),
    ("49436004", "I48.91", "Atrial fibrillation"),
    ("42343007", "I50.9", "Congestive heart failure"),
    ("709044004", "N18.9", "Chronic kidney disease"),
    ("396275006", "M19.90", "Osteoarthritis"),
    ("414916001", "E66.9", "Obesity"),
    ("40930008", "E03.9", "Hypothyroidism"),
    ("235595009", "K21.9", "Gastroesophageal reflux disease"),
    ("37796009", "G43.909", "Migraine"),
    ("279039007", "M54.50", "Low back pain"),
    ("53741008", "I25.10", "Coronary arteriosclerosis"),
    ("64859006", "M81.0", "Osteoporosis"),
    ("271737000", "D64.9", "Anemia"),
    ("230690007", "I63.9", "Cerebrovascular accident"),
]

# (RxNorm, display, dose, frequency) — route is oral tablet unless the display says otherwise
MEDICATIONS = [
    ("314076", "lisinopril 10 MG Oral Tablet", "1 tablet", "once daily"),
    ("861007", "metformin hydrochloride 500 MG Oral Tablet", "1 tablet", "twice daily"),
    ("617310", "atorvastatin 20 MG Oral Tablet", "1 tablet", "once daily at bedtime"),
    ("197361", "amlodipine 5 MG Oral Tablet", "1 tablet", "once daily"),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet", "1 tablet", "once daily"),
    ("966222", "levothyroxine sodium 0.05 MG Oral Tablet", "1 tablet", "once daily before breakfast"),
    ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "2 puffs", "every 4 hours as needed"),
    ("198211", "simvastatin 40 MG Oral Tablet", "1 tablet", "once daily"),
    ("313782", "acetaminophen 325 MG Oral Tablet", "2 tablets", "every 6 hours as needed"),
    ("314200", "pantoprazole 40 MG Delayed Release Oral Tablet", "1 tablet", "once daily"),
    ("855332", "warfarin sodium 5 MG Oral Tablet", "1 tablet", "once daily"),
    ("310429", "furosemide 20 MG Oral Tablet", "1 tablet", "once daily"),
    ("866924", "metoprolol tartrate 25 MG Oral Tablet", "1 tablet", "twice daily"),
    ("312941", "sertraline 50 MG Oral Tablet", "1 tablet", "once daily"),
    ("309362", "clopidogrel 75 MG Oral Tablet", "1 tablet", "once daily"),
    ("197381", "atenolol 50 MG Oral Tablet", "1 tablet", "once daily"),
]
ORAL_ROUTE = ("C38288", "Oral")
INHALED_ROUTE = ("C38216", "Respiratory (inhalation)")

# (code system, code, display)
ALLERGENS = [
    ("RxNorm", "7980", "Penicillin G"),
    ("RxNorm", "723", "Amoxicillin"),
    ("RxNorm", "2670", "Codeine"),
    ("RxNorm", "1191", "Aspirin"),
    ("RxNorm", "5640", "Ibuprofen"),
    ("RxNorm", "29046", "Lisinopril"),
    ("SNOMED CT", "256349002", "Peanut"),
    ("SNOMED CT", "102263004", "Eggs"),
    ("SNOMED CT", "111088007", "Latex"),
    ("SNOMED CT", "3718001", "Cow's milk"),
    ("SNOMED CT", "44027008", "Seafood"),
]
REACTIONS = [
    ("247472004", "Hives"),
    ("422587007", "Nausea"),
    ("271807003", "Rash"),
    ("39579001", "Anaphylaxis"),
    ("267036007", "Shortness of breath"),
    ("418290006", "Itching"),
]
SEVERITIES = [("255604002", "Mild"), ("6736007", "Moderate"), ("24484000", "Severe")]

# (CVX, display)
VACCINES = [
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
    ("115", "Tdap"),
    ("33", "pneumococcal polysaccharide vaccine, 23 valent"),
    ("133", "Pneumococcal conjugate PCV 13"),
    ("43", "Hep B, adult"),
    ("187", "zoster recombinant"),
    ("03", "MMR"),
]

# (LOINC, display, UCUM unit)
VITALS = {
    "height": ("8302-2", "Body height", "cm"),
    "weight": ("29463-7", "Body weight", "kg"),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2"),
    "systolic": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "diastolic": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    "heart_rate": ("8867-4", "Heart rate", "/min"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%"),
}

# panel (LOINC, display) -> [(LOINC, display, unit, low, high, typical mean, spread)]
RESULT_PANELS = {
    ("51990-0", "Basic metabolic panel - Blood"): [
        ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99, 98, 18),
        ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 1.0, 0.3),
        ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 135, 145, 140, 3),
        ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 4.2, 0.4),
    ],
    ("57698-3", "Lipid panel with direct LDL - Serum or Plasma"): [
        ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 0, 200, 195, 35),
        ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 0, 150, 140, 45),
        ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 40, 90, 52, 12),
    ],
    ("58410-2", "CBC panel - Blood by Automated count"): [
        ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12, 17.5, 14, 1.5),
        ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11, 7, 1.8),
        ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 450, 260, 60),
    ],
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"): [
        ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 6.8, 1.1),
    ],
}

# (SNOMED CT, display)
PROCEDURES = [
    ("73761001", "Colonoscopy"),
    ("80146002", "Appendectomy"),
    ("38102005", "Cholecystectomy"),
    ("24623002", "Screening mammography"),
    ("609588000", "Total knee replacement"),
    ("52734007", "Total hip replacement"),
    ("232717009", "Coronary artery bypass grafting"),
]

SMOKING_STATUSES = [
    ("266919005", "Never smoked tobacco", 55),
    ("8517006", "Ex-smoker", 25),
    ("449868002", "Smokes tobacco daily", 13),
    ("428041000124106", "Occasional tobacco smoker", 5),
    ("266927001", "Tobacco smoking consumption unknown", 2),
]

# (LOINC of what is measured, goal text)
GOALS = [
    ("8480-6", "Systolic blood pressure below 130 mm[Hg]"),
    ("4548-4", "Hemoglobin A1c below 7%"),
    ("29463-7", "Lose 5 kg over six months"),
    ("55423-8", "Walk 7,000 steps a day"),
    ("72166-2", "Stop smoking"),
]

# (SNOMED CT, display)
HEALTH_CONCERNS = [
    ("73595000", "Stress"),
    ("422650009", "Social isolation"),
    ("713458007", "Lack of access to transportation"),
    ("733423003", "Food insecurity"),
]

# (NUCC taxonomy, specialty, SNOMED CT care-team role code, role, referral SNOMED code)
SPECIALTIES = [
    ("207Q00000X", "Family Medicine", "446050000", "Primary care physician", "183516009"),
    ("207R00000X", "Internal Medicine", "446050000", "Primary care physician", "183516009"),
    ("207RC0000X", "Cardiovascular Disease", "17561000", "Cardiologist", "183519002"),
    ("207RE0101X", "Endocrinology, Diabetes & Metabolism", "61894003", "Endocrinologist", "183522000"),
    ("207RG0100X", "Gastroenterology", "71838004", "Gastroenterologist", "183521007"),
    ("2084N0400X", "Neurology", "56397003", "Neurologist", "183523005"),
    ("207X00000X", "Orthopaedic Surgery", "22731001", "Orthopedic surgeon", "183545006"),
    ("207N00000X", "Dermatology", "18803008", "Dermatologist", "183524004"),
    ("207RP1001X", "Pulmonary Disease", "41672002", "Pulmonologist", "183525003"),
    ("207RN0300X", "Nephrology", "11911009", "Nephrologist", "183526002"),
    ("2084P0800X", "Psychiatry", "80584001", "Psychiatrist", "183527006"),
    ("207RR0500X", "Rheumatology", "45440000", "Rheumatologist", "183543004"),
    ("207W00000X", "Ophthalmology", "422234006", "Ophthalmologist", "183551009"),
]

# (CPT, display)
ENCOUNTER_TYPES = [
    ("99213", "Office visit, established patient, low complexity"),
    ("99214", "Office visit, established patient, moderate complexity"),
    ("99203", "Office visit, new patient, low complexity"),
    ("99396", "Preventive visit, established patient, 40-64 years"),
]

# (LOINC, display)
NOTE_TYPES = [
    ("11506-3", "Progress note"),
    ("34117-2", "History and physical note"),
    ("11488-4", "Consult note"),
]

# PHDSC Source of Payment Typology (code, display, plan name)
PAYERS = [
    ("1", "MEDICARE", "Medicare Part B"),
    ("2", "MEDICAID", "State Medicaid Program"),
    ("511", "Commercial Managed Care - HMO", "Evergreen Health HMO"),
    ("512", "Commercial Managed Care - PPO", "Summit Mutual PPO"),
    ("81", "Self-pay", "Self-pay"),
]

# CDC Race & Ethnicity codes
RACES = [
    ("2106-3", "White"),
    ("2054-5", "Black or African American"),
    ("2028-9", "Asian"),
    ("1002-5", "American Indian or Alaska Native"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    ("2131-1", "Other Race"),
]
ETHNICITIES = [("2135-2", "Hispanic or Latino"), ("2186-5", "Not Hispanic or Latino")]

PLAN_FOLLOW_UP = ("SNOMED CT", "390906007", "Follow-up encounter")

# USCDI v3 sex, gender identity and sexual orientation, from the value sets the C-CDA Companion Guide R4.1 and
# C-CDA 3.0 bind (Sex 2.16.840.1.113762.1.4.1240.3, Gender Identity 2.16.840.1.113762.1.4.1021.101, Sexual
# Orientation 2.16.840.1.113762.1.4.1021.33). SNOMED CT (code, display); a code in NULL_ANSWERS is an answer
# that is not a concept (an HL7 NullFlavor): the patient was asked and declined, or it is not known.
NULL_ANSWERS = {"ASKU": "Asked but declined", "UNK": "Unknown", "OTH": "Other"}
SEXES = [("248152002", "Female"), ("248153007", "Male"), ("184115007", "Patient sex unknown")]
GENDER_IDENTITIES = [
    ("446141000124107", "Identifies as female gender"),
    ("446151000124109", "Identifies as male gender"),
    ("33791000087105", "Identifies as nonbinary gender"),
]
SEXUAL_ORIENTATIONS = [("20430005", "Heterosexual"), ("38628009", "Homosexual"), ("42035005", "Bisexual")]

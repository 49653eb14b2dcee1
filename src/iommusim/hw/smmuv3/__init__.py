"""The Arm SMMUv3 hardware model (IHI 0070): implementation parameters and presets
(:mod:`.params`), transactions, outcomes and event records (:mod:`.transaction`)."""

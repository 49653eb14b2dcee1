"""The Arm SMMUv3 driver (after Linux ``arm-smmu-v3``): probe, queues, STE/CD writing,
domains, invalidation, events, stalls and PRI."""
